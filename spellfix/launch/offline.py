"""Capture the CreateTrainingJob request, and answer the SDK's AWS calls locally for ``--dry-run``.

Both work through botocore's event system on one ``boto3.Session``, so the SageMaker SDK runs its real
code path (bucket resolution, source upload, channel building, serialisation) and we read the request
at the last moment:

- ``before-parameter-build.sagemaker.CreateTrainingJob`` sees the exact parameters the SDK sends
  (:class:`RequestCapture`). Tests use the same event; moto alone would not do, as it drops
  ``Environment`` and rewrites ``MetricDefinitions``.
- ``before-call.*.*`` may return a response instead of sending the request — botocore's own Stubber
  works this way. :class:`OfflineResponder` answers the few calls the SDK makes while building a job
  (STS identity, S3 bucket checks and uploads) with minimal well-formed responses, answers IAM with
  AccessDenied (a dry run verifies no permissions; the SDK treats that as "unknown") and refuses
  anything else, so a dry run never opens a connection and never needs credentials.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

CREATE_TRAINING_JOB_EVENT = "before-parameter-build.sagemaker.CreateTrainingJob"


class DryRunStop(Exception):
    """Raised inside the SDK once the request is captured, so nothing is created."""


class UnexpectedOfflineCall(RuntimeError):
    """The SDK made an AWS call a dry run does not know how to answer (nothing was sent)."""


@dataclass
class RequestCapture:
    """Records the CreateTrainingJob parameters; with ``stop=True`` aborts the call afterwards."""

    stop: bool = False
    request: dict[str, Any] | None = None

    def install(self, boto_session: Any) -> "RequestCapture":
        boto_session.events.register(CREATE_TRAINING_JOB_EVENT, self._on_create)
        return self

    def _on_create(self, params: dict[str, Any], **_: Any) -> None:
        self.request = copy.deepcopy(params)
        if self.stop:
            raise DryRunStop()


@dataclass
class OfflineResponder:
    """Answers AWS calls locally. ``account`` is what STS reports (the role ARN's account, so the
    default bucket name is the one a real launch would use)."""

    account: str
    uploads: list[tuple[str, str, int]] = field(default_factory=list)  # (bucket, key, bytes)
    calls: list[str] = field(default_factory=list)

    def install(self, boto_session: Any) -> "OfflineResponder":
        boto_session.events.register("before-call.*.*", self._answer)
        return self

    def _answer(self, model: Any, params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]]:
        # ``params`` is botocore's serialized request dict (url, headers, body), not the API arguments.
        from botocore.awsrequest import AWSResponse

        service = model.service_model.service_name
        op = model.name
        self.calls.append(f"{service}.{op}")
        if service == "iam":
            error = {"Error": {"Code": "AccessDenied", "Message": "not checked in a dry run"}}
            return AWSResponse("", 403, {}, None), {**error, "ResponseMetadata": {"HTTPStatusCode": 403}}
        body = self._body(service, op, params)
        return AWSResponse("", 200, {}, None), {**body, "ResponseMetadata": {"HTTPStatusCode": 200}}

    def _body(self, service: str, op: str, request: dict[str, Any]) -> dict[str, Any]:
        if (service, op) == ("sts", "GetCallerIdentity"):
            return {"Account": self.account, "Arn": f"arn:aws:iam::{self.account}:user/dry-run", "UserId": "DRYRUN"}
        if service == "s3":
            bucket, _, key = str(request.get("auth_path", "")).lstrip("/").partition("/")
            if op == "ListBuckets":
                return {"Buckets": []}
            if op in ("HeadBucket", "CreateBucket", "AbortMultipartUpload"):
                return {}
            if op == "ListObjectsV2":
                return {"KeyCount": 0, "IsTruncated": False}
            if op in ("PutObject", "UploadPart"):
                self.uploads.append((bucket, key, _body_size(request.get("body"))))
                return {"ETag": '"dry-run"'}
            if op == "CreateMultipartUpload":
                return {"Bucket": bucket, "Key": key, "UploadId": "dry-run"}
            if op == "CompleteMultipartUpload":
                return {"Bucket": bucket, "Key": key, "ETag": '"dry-run"'}
        raise UnexpectedOfflineCall(
            f"dry run: the SageMaker SDK called {service}.{op}, which the dry run does not answer "
            "(nothing was sent); run without --dry-run or report this SDK version"
        )

    @property
    def uploaded_bytes(self) -> int:
        return sum(size for _, _, size in self.uploads)


def _body_size(body: Any) -> int:
    if body is None:
        return 0
    if isinstance(body, (bytes, bytearray)):
        return len(body)
    for attr in ("_size", "len"):  # s3transfer's ReadFileChunk / botocore streaming bodies
        value = getattr(body, attr, None)
        if isinstance(value, int):
            return value
    try:
        return len(body)
    except TypeError:
        return 0
