"""Launch planning without AWS or the SDK: bad input fails in one clear sentence, before any upload."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from spellfix.config import load_recipe
from spellfix.launch import LaunchError
from spellfix.launch.bundle import build_source_bundle, job_requirements, stage_local_paths
from spellfix.launch.instances import INSTANCE_TYPES, check_precision, lookup_instance
from spellfix.launch.plan import BUNDLED_RECIPE, LaunchOptions, make_plan

ROLE = "arn:aws:iam::111122223333:role/SageMakerSpellfix"


@pytest.fixture
def recipe_file(tmp_path: Path, tiny_recipe_dict: dict) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict), encoding="utf-8")
    return path


def options(recipe_file: Path, **kw) -> LaunchOptions:
    kw.setdefault("role", ROLE)
    return LaunchOptions(recipe=str(recipe_file), **kw)


# ------------------------------------------------------------------------------ instance table


def test_instance_table_knows_v100_a10g_a100_h100_t4_with_gpu_counts():
    assert lookup_instance("ml.p3.16xlarge").gpu_count == 8
    assert lookup_instance("ml.p3.16xlarge").gpu.name == "V100"
    assert lookup_instance("ml.p3.2xlarge").gpu_count == 1
    assert lookup_instance("ml.g5.12xlarge").gpu.name == "A10G" and lookup_instance("ml.g5.12xlarge").gpu_count == 4
    assert lookup_instance("ml.p4d.24xlarge").gpu.name == "A100"
    assert lookup_instance("ml.p5.48xlarge").gpu.name == "H100"
    assert lookup_instance("ml.g4dn.xlarge").gpu.name == "T4"
    assert lookup_instance("ml.m5.xlarge").gpu is None and lookup_instance("ml.m5.xlarge").processes == 1


def test_auto_precision_is_fp16_on_v100_and_bf16_on_a10g():
    assert check_precision("auto", INSTANCE_TYPES["ml.p3.16xlarge"]) == "fp16"
    assert check_precision("auto", INSTANCE_TYPES["ml.g5.xlarge"]) == "bf16"
    assert check_precision("bf16", INSTANCE_TYPES["ml.p4d.24xlarge"]) == "bf16"


# ------------------------------------------------------------------------------ bad input


def test_missing_role_is_a_clear_error(recipe_file):
    with pytest.raises(LaunchError, match="--role is required.*arn:aws:iam::"):
        make_plan(options(recipe_file, role=None))


def test_role_that_is_not_an_arn_is_rejected(recipe_file):
    with pytest.raises(LaunchError, match="not an IAM role ARN"):
        make_plan(options(recipe_file, role="SageMakerRole"))


def test_unknown_instance_type_lists_the_known_ones(recipe_file):
    with pytest.raises(LaunchError, match=r"'ml\.p3\.17xlarge' is not a known.*ml\.p3\.16xlarge"):
        make_plan(options(recipe_file, instance_type="ml.p3.17xlarge"))
    with pytest.raises(LaunchError, match="start with 'ml.'"):
        make_plan(options(recipe_file, instance_type="p3.2xlarge"))


def test_bf16_recipe_on_v100_instance_is_refused_with_the_fix(recipe_file):
    with pytest.raises(LaunchError, match=r"bf16 but ml\.p3\.16xlarge \(8 x V100.*train\.precision=fp16"):
        make_plan(options(recipe_file, overrides=["train.precision=bf16"]))


def test_fp16_recipe_on_cpu_instance_is_refused(recipe_file):
    with pytest.raises(LaunchError, match="fp16 needs a CUDA GPU"):
        make_plan(options(recipe_file, instance_type="ml.m5.xlarge", overrides=["train.precision=fp16"]))


def test_channel_path_that_does_not_exist_is_named(recipe_file, tmp_path):
    missing = tmp_path / "nope" / "train.jsonl"
    with pytest.raises(LaunchError, match=f"--train {missing}: no such file"):
        make_plan(options(recipe_file, train=str(missing)))


def test_recipe_data_file_that_does_not_exist_is_named(tmp_path, tiny_recipe_dict):
    tiny_recipe_dict["data"]["train"].append(str(tmp_path / "gone.jsonl"))
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict))
    with pytest.raises(LaunchError, match=r"recipe data\.train\[1\]: .*gone\.jsonl does not exist"):
        make_plan(options(path))


def test_multi_node_is_refused_with_the_reason_and_the_fix(recipe_file):
    with pytest.raises(LaunchError, match=r"--instance-count 2: multi-node jobs are not supported.*own /opt/ml/checkpoints.*use one instance"):
        make_plan(options(recipe_file, instance_count=2))


def test_bad_s3_uri_is_rejected(recipe_file):
    with pytest.raises(LaunchError, match="--checkpoint-s3 'my-bucket/ckpt' is not an S3 URI"):
        make_plan(options(recipe_file, checkpoint_s3="my-bucket/ckpt"))


def test_global_batch_that_does_not_split_over_the_gpus_is_refused(recipe_file):
    with pytest.raises(LaunchError, match=r"global_batch_size=20 does not split over 8 training processes"):
        make_plan(options(recipe_file, overrides=["train.global_batch_size=20"]))


def test_max_wait_needs_spot_and_must_cover_max_run(recipe_file):
    with pytest.raises(LaunchError, match="managed spot training only"):
        make_plan(options(recipe_file, max_wait_hours=10))
    with pytest.raises(LaunchError, match=r"--max-wait-hours \(1\) must be >= --max-run-hours \(2"):
        make_plan(options(recipe_file, spot=True, max_run_hours=2, max_wait_hours=1))


def test_reserved_tag_prefix_is_refused(recipe_file):
    with pytest.raises(LaunchError, match="aws: prefix is reserved"):
        make_plan(options(recipe_file, tags=["aws:owner=me"]))


def test_unknown_recipe_field_in_set_names_the_key(recipe_file):
    with pytest.raises(ValueError, match="unknown key 'train.learning_rate'"):
        make_plan(options(recipe_file, overrides=["train.learning_rate=1e-4"]))


# ------------------------------------------------------------------------------ the plan


def test_plan_maps_recipe_files_to_channels_and_points_recipe_at_them(recipe_file, tiny_recipe_dict):
    plan = make_plan(options(recipe_file, spot=True, max_run_hours=3, overrides=["train.lr=4e-4"], tags=["team=search,cost=ml"]))
    by_name = {c.name: c for c in plan.channels}
    assert by_name["train"].local_paths == [Path(tiny_recipe_dict["data"]["train"][0]).resolve()]
    assert by_name["validation"].local_paths == [Path(tiny_recipe_dict["data"]["dev"]).resolve()]
    assert plan.recipe.data.train == ["/opt/ml/input/data/train"]
    assert plan.recipe.data.dev == "/opt/ml/input/data/validation"
    assert plan.recipe.train.lr == 4e-4
    assert plan.hyperparameters == {"recipe": BUNDLED_RECIPE, "resume": "auto", "overrides": {"train.lr": "4e-4"}}
    assert (plan.max_run_s, plan.max_wait_s) == (3 * 3600, 6 * 3600)
    assert plan.tags == [("project", "spellfix"), ("team", "search"), ("cost", "ml")]
    assert plan.precision == "fp32" and plan.world_size == 8
    assert plan.base_job_name == "spellfix-tiny"


def test_s3_train_option_replaces_recipe_files(recipe_file):
    plan = make_plan(options(recipe_file, train="s3://my-bucket/spellfix/train/"))
    train = next(c for c in plan.channels if c.name == "train")
    assert train.s3_uri == "s3://my-bucket/spellfix/train/" and not train.local_paths


# ------------------------------------------------------------------------------ source bundle


def test_source_bundle_holds_package_recipes_entry_and_requirements_without_torch(tmp_path, recipe_file):
    plan = make_plan(options(recipe_file))
    bundle = build_source_bundle(tmp_path / "code", plan.recipe_yaml)
    import spellfix

    package = Path(spellfix.__file__).parent
    for source in package.rglob("*.py"):
        assert filecmp.cmp(source, bundle / "spellfix" / source.relative_to(package), shallow=False), source
    assert not list(bundle.rglob("__pycache__"))
    assert (bundle / "launch" / "entry.py").is_file()
    requirements = (bundle / "requirements.txt").read_text().split()
    assert any(r.startswith("transformers") for r in requirements)
    assert not any(r.split(">")[0].split("=")[0] == "torch" for r in requirements)
    assert requirements == job_requirements()
    bundled = load_recipe(bundle / BUNDLED_RECIPE)
    assert bundled.data.train == ["/opt/ml/input/data/train"] and bundled.train.lr == plan.recipe.train.lr


def test_bundled_entry_script_runs_from_its_own_directory(tmp_path, recipe_file):
    bundle = build_source_bundle(tmp_path / "code", make_plan(options(recipe_file)).recipe_yaml)
    env = {"PATH": "/usr/bin:/bin", "SM_NUM_GPUS": "0", "SM_HPS": "{}", "SM_OUTPUT_DATA_DIR": str(tmp_path / "out" / "data")}
    proc = subprocess.run([sys.executable, str(bundle / "launch" / "entry.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "hyperparameter 'recipe' is missing" in proc.stderr


def test_staged_channel_keeps_recipe_order_and_avoids_name_clashes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "train.jsonl").write_text("1")
    (b / "train.jsonl").write_text("2")
    staged = stage_local_paths([b / "train.jsonl", a / "train.jsonl"], tmp_path / "staged")
    assert sorted(p.name for p in staged.iterdir()) == ["00-train.jsonl", "01-train.jsonl"]
    assert (staged / "00-train.jsonl").read_text() == "2"


# ------------------------------------------------------------------------------ local launch + docs


@pytest.mark.parametrize("name, processes, cpu", [("cpu", 1, True), ("single_gpu", 1, False), ("multi_gpu", 8, False)])
def test_accelerate_configs_load_and_leave_precision_to_the_recipe(name, processes, cpu):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(Path(__file__).parent.parent / "launch" / "accelerate" / f"{name}.yaml"))
    assert config.num_processes == processes and config.use_cpu is cpu
    assert config.mixed_precision == "no"


def test_documented_launch_commands_parse_with_the_cli():
    import shlex

    from spellfix.cli import build_parser

    text = (Path(__file__).parent.parent / "docs" / "sagemaker.md").read_text().replace("\\\n", " ")
    commands = [line.split("|")[0] for line in text.splitlines() if line.strip().startswith("spellfix launch sagemaker --")]
    assert len(commands) >= 2
    for command in commands:
        args = build_parser().parse_args(shlex.split(command)[1:])
        assert args.recipe and args.role.startswith("arn:aws:iam::")


def test_missing_sdk_is_one_clear_sentence_after_validation(recipe_file, monkeypatch):
    from spellfix.launch.sagemaker import submit

    plan = make_plan(options(recipe_file))  # validation needs no SDK
    monkeypatch.setitem(sys.modules, "sagemaker.train", None)  # what an uninstalled package looks like
    with pytest.raises(LaunchError, match=r"pip install 'spellfix\[sagemaker\]'"):
        submit(plan, dry_run=True)
