"""The SageMaker launcher through the real SDK code path, offline.

moto (``mock_aws``, in process) plays S3/STS/SageMaker; a botocore hook on
``before-parameter-build.sagemaker.CreateTrainingJob`` captures the exact request (moto alone drops
``Environment`` and rewrites ``MetricDefinitions``). An audit hook on ``socket.connect`` /
``socket.getaddrinfo`` refuses and records any connection that would leave 127.0.0.1, so the SDK's
telemetry or a missed AWS call cannot slip out. One smoke test goes through ``moto_server`` over HTTP.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("sagemaker.train", reason="SageMaker SDK v3 (sagemaker-train, the [sagemaker] extra) is not installed")
moto = pytest.importorskip("moto", reason="moto[server] (dev extra) is not installed")

import boto3  # noqa: E402

from spellfix.cli import main as cli_main  # noqa: E402
from spellfix.config import load_recipe  # noqa: E402
from spellfix.launch.plan import LaunchOptions, make_plan  # noqa: E402
from spellfix.launch.sagemaker import submit  # noqa: E402
from spellfix.telemetry import METRIC_DEFINITIONS  # noqa: E402

MOTO_ACCOUNT = "123456789012"  # moto's STS account: the default bucket names then match a dry run's
ROLE = f"arn:aws:iam::{MOTO_ACCOUNT}:role/SageMakerSpellfix"
REGION = "us-east-1"
P3_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.8.0-gpu-py312"


# ----------------------------------------------------------------------------- network guard


class NetworkGuard:
    """Process-wide audit hook (hooks cannot be removed), active only inside the ``offline_aws`` fixture."""

    active = False
    installed = False
    blocked: list[tuple[str, object]] = []
    local: list[object] = []

    @staticmethod
    def is_local(host: object) -> bool:
        if isinstance(host, bytes):
            host = host.decode()
        if not isinstance(host, str) or host in ("localhost", ""):
            return True  # AF_UNIX paths, None
        try:
            return ipaddress.ip_address(host.split("%")[0]).is_loopback
        except ValueError:
            return False

    @classmethod
    def hook(cls, event: str, args: tuple) -> None:
        if not cls.active:
            return
        if event == "socket.connect":
            address = args[1]
            host = address[0] if isinstance(address, tuple) else address
            if not cls.is_local(host):
                cls.blocked.append((event, address))
                raise ConnectionRefusedError(f"test network guard: connection to {address!r} refused")
            cls.local.append(address)
        elif event == "socket.getaddrinfo" and not cls.is_local(args[0]):
            cls.blocked.append((event, args[0]))
            raise socket.gaierror(f"test network guard: lookup of {args[0]!r} refused")



@pytest.fixture
def offline_aws(monkeypatch, tmp_path):
    """Fake credentials and region, no ~/.aws, SDK telemetry off, role validation off (moto has no
    iam:SimulatePrincipalPolicy), and the network guard on."""
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    config = tmp_path / "sagemaker-config.yaml"
    config.write_text("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("SAGEMAKER_VALIDATE_ROLE", "false")
    monkeypatch.setenv("SAGEMAKER_USER_CONFIG_OVERRIDE", str(config))
    if not NetworkGuard.installed:  # once per process, only when these tests run
        sys.addaudithook(NetworkGuard.hook)
        NetworkGuard.installed = True
    NetworkGuard.blocked.clear()
    NetworkGuard.local.clear()
    NetworkGuard.active = True
    yield
    NetworkGuard.active = False
    assert NetworkGuard.blocked == [], "a connection tried to leave 127.0.0.1"


@pytest.fixture
def recipe_file(tmp_path: Path, tiny_recipe_dict: dict) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict), encoding="utf-8")
    return path


def launch_options(recipe_file: Path, **kw) -> LaunchOptions:
    base = dict(
        recipe=str(recipe_file), role=ROLE, spot=True, max_run_hours=5,
        checkpoint_s3="s3://spellfix-ckpt/runs/tiny", tensorboard_s3="s3://spellfix-tb/runs/tiny",
        overrides=["train.lr=4e-4"], tags=["team=search"],
    )
    base.update(kw)
    return LaunchOptions(**base)


def capture_hook(boto_session) -> dict:
    """The test's own capture, independent of the launcher's."""
    captured: dict = {}
    boto_session.events.register(
        "before-parameter-build.sagemaker.CreateTrainingJob", lambda params, **_: captured.update(copy.deepcopy(params))
    )
    return captured


def read_s3(s3, uri: str) -> bytes:
    bucket, _, key = uri[len("s3://") :].partition("/")
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


# ------------------------------------------------------------------------------- the request


@pytest.mark.slow
def test_create_training_job_request_has_every_setting_and_the_code_uploaded_is_the_package(offline_aws, recipe_file, tiny_recipe_dict):
    with moto.mock_aws():
        session = boto3.Session(region_name=REGION)
        captured = capture_hook(session)
        result = submit(make_plan(launch_options(recipe_file)), boto_session=session)
        request = captured
        assert request == result.request  # the launcher's capture agrees with the test's

        assert request["RoleArn"] == ROLE
        assert request["AlgorithmSpecification"]["TrainingImage"] == P3_IMAGE
        assert request["AlgorithmSpecification"]["MetricDefinitions"] == METRIC_DEFINITIONS
        assert request["ResourceConfig"] == {"InstanceType": "ml.p3.16xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50}
        assert request["EnableManagedSpotTraining"] is True
        assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 5 * 3600, "MaxWaitTimeInSeconds": 10 * 3600}
        assert request["CheckpointConfig"] == {"S3Uri": "s3://spellfix-ckpt/runs/tiny", "LocalPath": "/opt/ml/checkpoints"}
        assert request["TensorBoardOutputConfig"] == {"S3OutputPath": "s3://spellfix-tb/runs/tiny", "LocalPath": "/opt/ml/output/tensorboard"}
        assert request["HyperParameters"] == {"recipe": "job/recipe.yaml", "resume": "auto", "overrides": '{"train.lr": "4e-4"}'}
        assert request["Environment"]["SPELLFIX_CHECKPOINT_DIR"] == "/opt/ml/checkpoints"
        assert request["Environment"]["SPELLFIX_TENSORBOARD_DIR"] == "/opt/ml/output/tensorboard"
        assert request["Environment"]["PYTHONUNBUFFERED"] == "1"
        assert {"Key": "team", "Value": "search"} in request["Tags"] and {"Key": "project", "Value": "spellfix"} in request["Tags"]
        assert request["TrainingJobName"].startswith("spellfix-tiny-")

        channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}
        assert set(channels) == {"train", "validation", "code", "sm_drivers"}
        s3 = session.client("s3")
        # Local data was uploaded first: the channels hold the recipe's files, byte for byte.
        assert read_s3(s3, channels["train"]) == Path(tiny_recipe_dict["data"]["train"][0]).read_bytes()
        assert read_s3(s3, channels["validation"]) == Path(tiny_recipe_dict["data"]["dev"]).read_bytes()

        # Distribution: torchrun over the 8 GPUs of each node, running our entry script.
        drivers = channels["sm_drivers"]
        assert json.loads(read_s3(s3, f"{drivers}/distributed.json")) == {"process_count_per_node": 8, "smp": None}
        source = json.loads(read_s3(s3, f"{drivers}/sourcecode.json"))
        assert (source["entry_script"], source["requirements"]) == ("launch/entry.py", "requirements.txt")
        assert "torchrun_driver.py" in read_s3(s3, f"{drivers}/sm_train.sh").decode()

        # The code channel is the spellfix package (+ recipe, entry, requirements).
        import spellfix

        package = Path(spellfix.__file__).parent
        code = channels["code"]
        for path in package.rglob("*.py"):
            assert read_s3(s3, f"{code}/spellfix/{path.relative_to(package).as_posix()}") == path.read_bytes(), path
        bundled = Path(tiny_recipe_dict["data"]["dev"]).parent / "bundled.yaml"
        bundled.write_bytes(read_s3(s3, f"{code}/job/recipe.yaml"))
        recipe = load_recipe(bundled)
        assert recipe.train.lr == 4e-4 and recipe.data.train == ["/opt/ml/input/data/train"]
        assert b"transformers" in read_s3(s3, f"{code}/requirements.txt")
        assert read_s3(s3, f"{code}/launch/entry.py") == (Path(__file__).parent.parent / "launch" / "entry.py").read_bytes()

        job = session.client("sagemaker").describe_training_job(TrainingJobName=result.job_name)
        assert job["TrainingJobArn"] == result.job_arn


@pytest.mark.slow
def test_dry_run_prints_the_same_request_and_sends_nothing_without_credentials(offline_aws, recipe_file, monkeypatch, capsys):
    with moto.mock_aws():
        session = boto3.Session(region_name=REGION)
        real = submit(make_plan(launch_options(recipe_file)), boto_session=session).request

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    args = ["launch", "sagemaker", "--recipe", str(recipe_file), "--role", ROLE, "--spot", "--max-run-hours", "5",
            "--checkpoint-s3", "s3://spellfix-ckpt/runs/tiny", "--tensorboard-s3", "s3://spellfix-tb/runs/tiny",
            "--set", "train.lr=4e-4", "--tags", "team=search", "--region", REGION, "--dry-run"]
    assert cli_main(args) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 1, "stdout is exactly one JSON object"
    dry = json.loads(lines[0])
    assert "dry run: job" in captured.err and "not sent" in captured.err
    assert NetworkGuard.local == [] and NetworkGuard.blocked == []  # not even loopback: nothing was sent

    def normalized(request: dict) -> str:
        return json.dumps(request, sort_keys=True).replace(request["TrainingJobName"], "JOB")

    assert normalized(dry) == normalized(real)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--role", ""], "--role is required"),
        (["--instance-type", "ml.p3.32xlarge"], "is not a known training instance type"),
        (["--set", "train.precision=bf16"], "bf16 but ml.p3.16xlarge (8 x V100"),
        (["--train", "/nonexistent/train.jsonl"], "--train /nonexistent/train.jsonl: no such file or directory"),
    ],
    ids=["missing-role", "unknown-instance-type", "bf16-on-v100", "missing-channel-path"],
)
def test_bad_input_is_refused_before_anything_is_uploaded(offline_aws, recipe_file, capsys, extra, message):
    with moto.mock_aws():
        args = ["launch", "sagemaker", "--recipe", str(recipe_file), "--role", ROLE, *extra]
        assert cli_main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("spellfix: error: ") and message in err, err
        assert boto3.client("s3").list_buckets()["Buckets"] == []
        assert boto3.client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []


# ------------------------------------------------------------------------------- moto_server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def moto_server(offline_aws, monkeypatch):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("moto_server exited") from None
                time.sleep(0.1)
        else:
            raise RuntimeError("moto_server did not start")
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_smoke_launch_through_moto_server_over_loopback_http(moto_server, recipe_file, tiny_recipe_dict):
    options = launch_options(recipe_file, output_path="s3://spellfix-smoke/jobs", checkpoint_s3=None, tensorboard_s3=None)
    plan = make_plan(options)
    with pytest.raises(ValueError, match="bucket spellfix-smoke does not exist"):
        submit(plan)
    session = boto3.Session(region_name=REGION)
    session.client("s3").create_bucket(Bucket="spellfix-smoke")
    result = submit(plan)
    job = session.client("sagemaker").describe_training_job(TrainingJobName=result.job_name)
    assert job["TrainingJobArn"] == result.job_arn
    assert job["ResourceConfig"]["InstanceType"] == "ml.p3.16xlarge"
    assert result.request["OutputDataConfig"]["S3OutputPath"] == "s3://spellfix-smoke/jobs"
    # The SDK defaulted checkpoints under the output location; the code went to the same bucket.
    assert result.request["CheckpointConfig"]["S3Uri"].startswith(f"s3://spellfix-smoke/jobs/spellfix-tiny/{result.job_name}/")
    keys = [o["Key"] for o in session.client("s3").list_objects_v2(Bucket="spellfix-smoke", MaxKeys=1000)["Contents"]]
    assert any(k.endswith("/code/spellfix/__init__.py") for k in keys)
    assert any(k.endswith("/input/train/train.jsonl") for k in keys)
    assert NetworkGuard.local and all(addr[0] == "127.0.0.1" and addr[1] == moto_server for addr in NetworkGuard.local)


def test_launch_without_aws_credentials_fails_in_one_line_and_opens_no_socket(offline_aws, recipe_file, monkeypatch, capsys):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    assert cli_main(["launch", "sagemaker", "--recipe", str(recipe_file), "--role", ROLE]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("spellfix: error: cannot create the training job: Unable to locate credentials"), err
    assert NetworkGuard.local == []
