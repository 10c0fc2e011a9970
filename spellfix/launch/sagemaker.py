"""``spellfix launch sagemaker``: a recipe → a SageMaker training job via ``sagemaker.train.ModelTrainer``.

The SageMaker Python SDK v3 (package ``sagemaker-train``, the ``[sagemaker]`` extra; Estimators are
gone) builds and sends the CreateTrainingJob request. We give it:

- the training image (default: ``pytorch-training:2.8.0`` — the newest line with V100 kernels, for
  ml.p3.*), instance type × count, and ``Torchrun`` over every GPU of every node;
- a source directory built by :mod:`spellfix.launch.bundle` (package + recipes + entry point +
  requirements), and one input channel per recipe data field (local paths are uploaded by the SDK);
- hyperparameters (the bundled recipe + ``--set`` overrides), checkpoints synced between S3 and
  ``/opt/ml/checkpoints`` (this is what lets managed spot training resume), TensorBoard output,
  metric definitions whose regexes read the trainer's ``spellfix: step=...`` lines, stopping
  condition, tags.

Everything the user can get wrong is validated first (:func:`spellfix.launch.plan.make_plan`), before
the SDK is even imported. ``--dry-run`` runs the same SDK code path with every AWS call answered
locally (:mod:`spellfix.launch.offline`) and prints the CreateTrainingJob request as one JSON object.

Python use::

    from spellfix.launch.plan import LaunchOptions, make_plan
    from spellfix.launch.sagemaker import submit
    result = submit(make_plan(LaunchOptions(recipe="bart-base-8xv100", role=ROLE, train="s3://b/train/")))
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from spellfix.launch import LaunchError
from spellfix.launch.plan import (
    CONTAINER_CHECKPOINT_DIR,
    CONTAINER_TENSORBOARD_DIR,
    DEFAULT_FRAMEWORK_VERSION,
    DEFAULT_INSTANCE_TYPE,
    ENTRY_SCRIPT,
    LaunchOptions,
    LaunchPlan,
    make_plan,
)

log = logging.getLogger(__name__)

SDK_MISSING = "the SageMaker SDK is not installed: pip install 'spellfix[sagemaker]' (package sagemaker-train)"


@dataclass
class LaunchResult:
    request: dict[str, Any]  # the exact CreateTrainingJob parameters
    job_name: str
    job_arn: str | None = None  # None for a dry run
    dry_run: bool = False
    uploads: list[tuple[str, str, int]] = field(default_factory=list)  # dry run: (bucket, key, bytes) not sent


# ------------------------------------------------------------------------------------ submit


def submit(
    plan: LaunchPlan,
    *,
    dry_run: bool = False,
    wait: bool = False,
    boto_session: Any = None,
) -> LaunchResult:
    """Build the job with ModelTrainer and send it (or, with ``dry_run``, capture it and send nothing).

    ``boto_session``: a ``boto3.Session`` to use (tests pass one with their own event hooks); it
    must not have created clients yet, because botocore copies event hooks into each client.
    """
    try:
        import boto3
        from sagemaker.core.helper.session_helper import Session
        from sagemaker.core.helper.iam_role_resolver import RoleValidationError
        from sagemaker.train import ModelTrainer  # noqa: F401  (fail early and clearly)
    except ImportError as exc:
        raise LaunchError(f"{SDK_MISSING} ({exc})") from None
    from botocore.exceptions import BotoCoreError, ClientError

    from spellfix.launch.offline import DryRunStop, OfflineResponder, RequestCapture

    options = plan.options
    if boto_session is None:
        credentials = {"aws_access_key_id": "dry-run", "aws_secret_access_key": "dry-run"} if dry_run else {}
        boto_session = boto3.Session(region_name=options.region, **credentials)
    region = options.region or boto_session.region_name
    if not region:
        raise LaunchError("no AWS region: pass --region or set AWS_DEFAULT_REGION (or a region in ~/.aws/config)")

    capture = RequestCapture(stop=dry_run).install(boto_session)
    responder = OfflineResponder(account=options.role.split(":")[4]).install(boto_session) if dry_run else None  # type: ignore[union-attr]

    image = options.image or default_image(region, options.framework_version, options.instance_type)
    bucket, prefix = _split_s3(options.output_path) if options.output_path else (None, None)
    with tempfile.TemporaryDirectory(prefix="spellfix-launch-") as tmp:
        from spellfix.launch.bundle import build_source_bundle, bundle_size

        code_dir = build_source_bundle(
            Path(tmp) / "code", plan.recipe_yaml, launch_info={"options": asdict(options), "image": image}
        )
        files, size = bundle_size(code_dir)
        log.info("spellfix: source bundle %s: %d files, %.1f MB", code_dir, files, size / 1e6)
        inputs = _input_data(plan, Path(tmp) / "channels")
        trainer = None
        try:
            session = Session(
                boto_session=boto_session,
                default_bucket=bucket,
                default_bucket_prefix=prefix or None,
                sagemaker_config=_dry_run_sdk_config() if dry_run else None,
            )
            trainer = build_trainer(plan, session, image, code_dir)  # resolves and checks the role (IAM)
            trainer.train(input_data_config=inputs, wait=wait, logs=wait)
        except DryRunStop:
            pass
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchBucket" and bucket:
                raise LaunchError(f"--output-path {options.output_path}: bucket {bucket} does not exist (create it first)") from exc
            raise RuntimeError(f"AWS refused the training job: {exc}") from exc
        except (BotoCoreError, RoleValidationError) as exc:  # no credentials, no region, role lacks rights
            raise RuntimeError(f"cannot create the training job: {exc}") from exc

    if capture.request is None:
        raise RuntimeError("the SageMaker SDK returned without sending CreateTrainingJob")
    job = getattr(trainer, "_latest_training_job", None)
    return LaunchResult(
        request=capture.request,
        job_name=capture.request["TrainingJobName"],
        job_arn=None if dry_run or job is None else getattr(job, "training_job_arn", None),
        dry_run=dry_run,
        uploads=list(responder.uploads) if responder else [],
    )


def build_trainer(plan: LaunchPlan, session: Any, image: str, code_dir: Path) -> Any:
    """The ModelTrainer for ``plan`` (no AWS call is made until ``train()``)."""
    from sagemaker.core.training.configs import (
        CheckpointConfig,
        Compute,
        MetricDefinition,
        OutputDataConfig,
        SourceCode,
        StoppingCondition,
        Tag,
        TensorBoardOutputConfig,
    )
    from sagemaker.train import ModelTrainer
    from sagemaker.train.distributed import Torchrun

    from spellfix.telemetry import METRIC_DEFINITIONS

    options = plan.options
    trainer = ModelTrainer(
        sagemaker_session=session,
        role=options.role,
        base_job_name=plan.base_job_name,
        training_image=image,
        source_code=SourceCode(source_dir=str(code_dir), entry_script=ENTRY_SCRIPT, requirements="requirements.txt"),
        # torchrun --nnodes <instance count> --nproc_per_node <GPUs per instance>
        distributed=Torchrun(process_count_per_node=plan.instance.processes),
        compute=Compute(
            instance_type=options.instance_type,
            instance_count=options.instance_count,
            volume_size_in_gb=options.volume_size_gb,
            enable_managed_spot_training=True if options.spot else None,
        ),
        stopping_condition=StoppingCondition(
            max_runtime_in_seconds=plan.max_run_s,
            max_wait_time_in_seconds=plan.max_wait_s,
        ),
        output_data_config=OutputDataConfig(s3_output_path=options.output_path, compression_type="GZIP") if options.output_path else None,
        # s3_uri None: the SDK picks s3://<bucket>/<prefix>/<base job>/<job>/checkpoints.
        checkpoint_config=CheckpointConfig(s3_uri=options.checkpoint_s3, local_path=CONTAINER_CHECKPOINT_DIR),
        hyperparameters=dict(plan.hyperparameters),
        environment=dict(plan.environment),
        tags=[Tag(key=k, value=v) for k, v in plan.tags],
    )
    trainer = trainer.with_metric_definitions([MetricDefinition(name=d["Name"], regex=d["Regex"]) for d in METRIC_DEFINITIONS])
    return trainer.with_tensorboard_output_config(
        TensorBoardOutputConfig(s3_output_path=options.tensorboard_s3, local_path=CONTAINER_TENSORBOARD_DIR)
    )


def default_image(region: str, framework_version: str = DEFAULT_FRAMEWORK_VERSION, instance_type: str = DEFAULT_INSTANCE_TYPE) -> str:
    """The AWS PyTorch training image URI (an offline table lookup in the SDK)."""
    from sagemaker.core import image_uris

    try:
        return image_uris.retrieve(
            framework="pytorch", region=region, version=framework_version,
            instance_type=instance_type, image_scope="training",
        )
    except ValueError as exc:
        raise LaunchError(f"no PyTorch training image for version {framework_version} in {region} ({instance_type}): {exc}; pass --image URI") from None


def _input_data(plan: LaunchPlan, staging: Path) -> list[Any]:
    from sagemaker.core.training.configs import InputData

    from spellfix.launch.bundle import stage_local_paths

    inputs = []
    for channel in plan.channels:
        if channel.s3_uri:
            source = channel.s3_uri
        elif len(channel.local_paths) == 1:
            source = str(channel.local_paths[0])
        else:
            source = str(stage_local_paths(channel.local_paths, staging / channel.name))
        inputs.append(InputData(channel_name=channel.name, data_source=source))
    return inputs


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    return bucket, prefix.strip("/")


def _dry_run_sdk_config() -> dict[str, Any]:
    """The user's SageMaker SDK config (defaults such as VPC or KMS settings shape the request) with
    the SDK's telemetry turned off: a dry run sends nothing."""
    from sagemaker.core.config.config import load_sagemaker_config

    config = load_sagemaker_config() or {}
    config.setdefault("SchemaVersion", "1.0")
    config.setdefault("SageMaker", {}).setdefault("PythonSDK", {}).setdefault("Modules", {})["TelemetryOptOut"] = True
    return config


# ------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``spellfix launch sagemaker`` (the lead's CLI calls this, then :func:`run`)."""
    parser.description = (
        "Submit a SageMaker training job for a recipe (SageMaker SDK v3 ModelTrainer, torchrun over all GPUs). "
        "Data paths may be local (uploaded first) or s3:// URIs; without --train/--clean/--validation the "
        "recipe's own data files are uploaded."
    )
    parser.add_argument("--recipe", required=True, help="recipe YAML or shipped recipe name")
    parser.add_argument("--role", help="IAM role ARN SageMaker assumes (arn:aws:iam::<account>:role/<name>)")
    parser.add_argument("--train", metavar="S3_OR_PATH", help="pair files for data.train (default: the recipe's)")
    parser.add_argument("--validation", metavar="S3_OR_PATH", help="dev pair file for data.dev (default: the recipe's)")
    parser.add_argument("--clean", metavar="S3_OR_PATH", help="clean-query corpora for data.clean (default: the recipe's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe field, e.g. train.lr=3e-4 (repeatable)")
    parser.add_argument("--instance-type", default=DEFAULT_INSTANCE_TYPE, help=f"default {DEFAULT_INSTANCE_TYPE} (8 x V100)")
    parser.add_argument("--instance-count", type=int, default=1, help="nodes (torchrun --nnodes)")
    parser.add_argument("--spot", action="store_true", help="managed spot training (resumes from the checkpoint S3 URI)")
    parser.add_argument("--max-run-hours", type=float, default=24.0, help="MaxRuntimeInSeconds, in hours (default 24)")
    parser.add_argument("--max-wait-hours", type=float, help="with --spot: total time including waiting for capacity (default 2 x max run)")
    parser.add_argument("--image", metavar="URI", help="training image (default: AWS pytorch-training for --framework-version)")
    parser.add_argument("--framework-version", default=DEFAULT_FRAMEWORK_VERSION,
                        help=f"PyTorch training image version (default {DEFAULT_FRAMEWORK_VERSION}: keeps V100 kernels)")
    parser.add_argument("--region", help="AWS region (default: from the AWS config/environment)")
    parser.add_argument("--output-path", metavar="S3_URI", help="where the model and code go (default s3://sagemaker-<region>-<account>/)")
    parser.add_argument("--checkpoint-s3", metavar="S3_URI", help="checkpoint sync location; reuse it to resume across jobs")
    parser.add_argument("--tensorboard-s3", metavar="S3_URI", help="TensorBoard output location (default: chosen by the SDK)")
    parser.add_argument("--volume-size-gb", type=int, default=50, help="EBS volume per instance (default 50)")
    parser.add_argument("--tags", action="append", default=[], metavar="KEY=VALUE", help="resource tags (repeatable, or comma-separated)")
    parser.add_argument("--base-job-name", help="job name prefix (default spellfix-<recipe name>)")
    parser.add_argument("--resume", default="auto", choices=["auto", "never"], help="inside the job: resume from /opt/ml/checkpoints (default auto)")
    parser.add_argument("--wait", action="store_true", help="wait for the job and stream its logs")
    parser.add_argument("--dry-run", action="store_true", help="print the CreateTrainingJob request as JSON and send nothing")


def options_from_args(args: argparse.Namespace) -> LaunchOptions:
    return LaunchOptions(
        recipe=args.recipe, role=args.role, overrides=list(args.overrides or []),
        train=args.train, validation=args.validation, clean=args.clean,
        instance_type=args.instance_type, instance_count=args.instance_count, spot=args.spot,
        image=args.image, framework_version=args.framework_version, region=args.region,
        checkpoint_s3=args.checkpoint_s3, output_path=args.output_path, tensorboard_s3=args.tensorboard_s3,
        max_run_hours=args.max_run_hours, max_wait_hours=args.max_wait_hours, volume_size_gb=args.volume_size_gb,
        tags=list(args.tags or []), base_job_name=args.base_job_name, resume=args.resume,
    )


def run(args: argparse.Namespace) -> int:
    """CLI body: validate, then submit (or print the request with --dry-run). Errors are ValueError
    (bad input, exit 2 via the CLI) or RuntimeError (AWS said no)."""
    plan = make_plan(options_from_args(args))
    if not getattr(args, "verbose", False):
        # The SDK logs chatty INFO lines (and, in a dry run, warnings about IAM it could not check).
        for name in ("sagemaker", "sagemaker.config"):
            logging.getLogger(name).setLevel(logging.ERROR if args.dry_run else logging.WARNING)
    result = submit(plan, dry_run=args.dry_run, wait=args.wait)
    if result.dry_run:
        print(json.dumps(result.request, default=str))
        print(
            f"spellfix: dry run: job {result.job_name} not created; {len(result.uploads)} uploads "
            f"({sum(u[2] for u in result.uploads) / 1e6:.1f} MB) not sent",
            file=sys.stderr,
        )
    else:
        print(json.dumps({"TrainingJobName": result.job_name, "TrainingJobArn": result.job_arn}))
    return 0
