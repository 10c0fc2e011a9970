"""The SageMaker container contract: SM_* environment, hyperparameters in every shape they arrive in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spellfix.launch import LaunchError
from spellfix.launch.entry import apply_channels, channel_files
from spellfix.launch.sm_env import (
    parse_bool,
    parse_cli_hyperparameters,
    read_environment,
    recipe_overrides,
    unknown_hyperparameters,
)


@pytest.mark.parametrize("text", ["true", "True", "TRUE", "yes", "1", "on", True, 1])
def test_booleans_are_true_in_any_case(text):
    assert parse_bool(text, "flag") is True


@pytest.mark.parametrize("text", ["false", "False", "FALSE", "no", "0", "off", False, 0])
def test_booleans_are_false_in_any_case(text):
    assert parse_bool(text, "flag") is False


def test_non_boolean_names_the_hyperparameter():
    with pytest.raises(LaunchError, match="hyperparameter compile='maybe' is not a boolean"):
        parse_bool("maybe", "compile")


def test_cli_hyperparameters_accept_pairs_equals_and_bare_flags():
    hps = parse_cli_hyperparameters(["--recipe", "job/recipe.yaml", "--lr=0.1", "--overrides", '{"train.lr": "3e-4"}', "--fast"])
    assert hps == {"recipe": "job/recipe.yaml", "lr": 0.1, "overrides": {"train.lr": "3e-4"}, "fast": True}
    with pytest.raises(LaunchError, match="unexpected argument 'stray'"):
        parse_cli_hyperparameters(["stray"])


def test_sm_hps_wins_over_argv_and_keeps_its_types(tmp_path):
    environ = {
        "SM_HPS": json.dumps({"recipe": "job/recipe.yaml", "overrides": {"train.max_steps": 7}}),
        "SM_CHANNEL_TRAIN": str(tmp_path / "train"),
        "SM_CHANNEL_VALIDATION": str(tmp_path / "validation"),
        "SM_MODEL_DIR": str(tmp_path / "model"),
        "SM_OUTPUT_DATA_DIR": str(tmp_path / "output" / "data"),
        "SM_NUM_GPUS": "8",
        "SM_HOSTS": '["algo-2", "algo-1"]',
        "SM_CURRENT_HOST": "algo-1",
    }
    env = read_environment(environ, ["--recipe", "other.yaml", "--resume", "never"])
    assert env.hyperparameters == {"recipe": "job/recipe.yaml", "resume": "never", "overrides": {"train.max_steps": 7}}
    assert env.channels == {"train": tmp_path / "train", "validation": tmp_path / "validation"}
    assert env.model_dir == tmp_path / "model" and env.num_gpus == 8
    assert env.hosts == ["algo-2", "algo-1"] and env.current_host == "algo-1"
    assert env.checkpoint_dir == Path("/opt/ml/checkpoints")
    assert env.tensorboard_dir == Path("/opt/ml/output/tensorboard")
    assert env.failure_file == tmp_path / "output" / "failure"


def test_bad_sm_hps_is_a_clear_error():
    with pytest.raises(LaunchError, match="SM_HPS is not valid JSON"):
        read_environment({"SM_HPS": "{recipe: "}, [])


@pytest.mark.parametrize(
    "given",
    [
        {"train.lr": "3e-4", "train.compile": "False"},  # dict from SM_HPS, strings inside
        '{"train.lr": "3e-4", "train.compile": "FALSE"}',  # JSON text
        "{'train.lr': '3e-4', 'train.compile': 'false'}",  # str(dict) from the classic toolkit
        ["train.lr=3e-4", "train.compile=False"],  # --set style list
    ],
)
def test_overrides_parse_like_cli_set_whatever_shape_they_arrive_in(given, tiny_recipe_dict):
    from spellfix.config import load_recipe

    overrides = recipe_overrides({"overrides": given})
    assert overrides["train.compile"] is False
    recipe = load_recipe(tiny_recipe_dict, overrides)
    assert recipe.train.lr == 3e-4 and recipe.train.compile is False


def test_dotted_hyperparameters_are_overrides_and_unknown_ones_are_reported():
    hps = {"recipe": "r", "train.max_steps": "12", "sagemaker_program": "x", "epochs": "3"}
    assert recipe_overrides(hps) == {"train.max_steps": 12}
    assert unknown_hyperparameters(hps) == ["epochs"]


# ----------------------------------------------------------------------------- channels


def test_channel_files_are_sorted_skip_hidden_and_treat_dataset_dirs_as_one_source(tmp_path):
    root = tmp_path / "train"
    (root / "sub").mkdir(parents=True)
    (root / "ds").mkdir()
    (root / "01-b.jsonl").write_text("{}")
    (root / "00-a.jsonl").write_text("{}")
    (root / ".hidden").write_text("")
    (root / "sub" / "c.tsv").write_text("")
    (root / "ds" / "dataset_info.json").write_text("{}")
    (root / "ds" / "data-00000-of-00001.arrow").write_text("")
    assert [p.relative_to(root).as_posix() for p in channel_files(root, "train")] == ["00-a.jsonl", "01-b.jsonl", "ds", "sub/c.tsv"]
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "state.json").write_text("{}")
    assert channel_files(tmp_path / "saved", "train") == [tmp_path / "saved"]


def test_empty_channel_is_an_error(tmp_path):
    (tmp_path / "clean").mkdir()
    with pytest.raises(LaunchError, match="channel 'clean' .* is empty"):
        channel_files(tmp_path / "clean", "clean")


def test_validation_channel_must_hold_one_file(tmp_path, tiny_recipe_dict):
    from spellfix.config import load_recipe

    recipe = load_recipe(tiny_recipe_dict)
    val = tmp_path / "validation"
    val.mkdir()
    (val / "a.jsonl").write_text("{}")
    (val / "b.jsonl").write_text("{}")
    with pytest.raises(LaunchError, match="must hold exactly one pair file .* found 2: a.jsonl, b.jsonl"):
        apply_channels(recipe, {"validation": val})
    (val / "b.jsonl").unlink()
    train = tmp_path / "train"
    train.mkdir()
    (train / "x.jsonl").write_text("{}")
    apply_channels(recipe, {"validation": val, "train": train})
    assert recipe.data.dev == str(val / "a.jsonl") and recipe.data.train == [str(train / "x.jsonl")]
