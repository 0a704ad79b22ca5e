"""A real SageMaker training job, launched with the SageMaker Python SDK (v2) in script mode.

The project's entry point (`training.train`, staged with the `training` package as source_dir, see
`stage_source`) runs in AWS's MXNet 1.9 training container (`framework_version="1.9.0"`,
`py_version="py38"`). With `instance_count >= 2` every host runs the entry point, which starts
MXNet's scheduler and servers itself from SM_HOSTS (training.distributed) and trains with
`dist_sync` on its shard of the data. The SDK's `distribution={"parameter_server": ...}` option is
left off: the toolkit would start those roles without the project's code on their path, and the
servers must unpickle the optimizer's learning-rate schedule (training.dist_schedule).

Why SDK v2: v3 (`sagemaker>=3`) removed the MXNet estimator, its parameter-server option and
`sagemaker.workflow`; 2.243.2 is the newest v2 release whose requirements accept numpy 1.23.x,
which MXNet 1.9.1 needs (README, "Training on SageMaker").

What a job gets (all visible with `--dry-run`, which sends nothing):
  - channels: `train` (and `validation`): an `s3://` URI as given, or a local folder uploaded first
    to `s3://BUCKET/PREFIX/data/<name>-<data hash>/`;
  - hyperparameters: the `--key value` pairs, passed to the entry point as SageMaker does;
  - metric definitions matching the `[metric] name=value` lines the training loop prints;
  - spot training (`--spot`) with a checkpoint S3 URI: SageMaker copies it to /opt/ml/checkpoints,
    from which the entry point resumes after an interruption;
  - tags: git commit and data hash (or data URI).

Errors a user can cause (no credentials, unknown role, missing bucket, a mistyped S3 URI, a failed
or stopped job) are one `SageMakerJobError` line naming the thing; nothing is launched or downloaded
half-way (a download goes to a temporary name first).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import common
import training
from common.errors import RunFailed, UserError
from common.files import atomic_path, write_text
from training.lineage import data_hash, git_commit

ENTRY_POINT = "lensops_train.py"
FRAMEWORK_VERSION, PY_VERSION = "1.9.0", "py38"
# What the entry point imports beyond what AWS's MXNet training container has (mxnet, numpy).
# gluoncv is listed without opencv-python's GUI build conflicts in mind: the container has libGL.
REQUIREMENTS = ["gluoncv==0.10.5.post0", "opencv-python-headless", "pydantic>=2", "pyyaml", "tqdm", "matplotlib"]
METRICS = (
    "train_loss",
    "train_images_per_s",
    "val_loss",
    "val_accuracy",
    "val_map",
    "best_val_accuracy",
    "best_val_map",
    "test_accuracy",
    "test_map",
    "test_loss",
)
_S3_URI = re.compile(r"^s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(/[^\s]*)?$")
TERMINAL = ("Completed", "Failed", "Stopped")
log = logging.getLogger(__name__)


class SageMakerJobError(UserError):
    """A job could not be launched, or its result not read; the message names the cause."""


class JobFailed(RunFailed):
    """A job that failed or was stopped: SageMaker's FailureReason (or its status) in the message."""


def import_sagemaker(*modules: str):
    """Import the SageMaker SDK with its telemetry off and its import-time INFO noise quiet.

    SDK v2 sends a usage ping to an AWS-owned S3 endpoint after each job call (without a working
    timeout). Its only switch is a config file (`TelemetryOptOut`); a user's own
    SAGEMAKER_USER_CONFIG_OVERRIDE is left alone. The SDK also calls logging.basicConfig(INFO) at import
    (of `modules` too, e.g. "sagemaker.workflow.pipeline"); the root logger is put back as it was."""
    if "SAGEMAKER_USER_CONFIG_OVERRIDE" not in os.environ:
        config = Path(tempfile.gettempdir()) / f"lensops-sagemaker-config-{os.getuid()}.yaml"
        write_text(
            config,
            "SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n",
            fsync=False,
        )
        os.environ["SAGEMAKER_USER_CONFIG_OVERRIDE"] = str(config)
    logging.getLogger("sagemaker.config").setLevel(logging.WARNING)
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    import importlib

    try:
        import sagemaker
    except ImportError:
        raise SageMakerJobError("the SageMaker Python SDK is not installed: pip install 'lensops[sagemaker]'") from None

    for module in ("sagemaker.mxnet", *modules):  # submodules configure logging at import too
        importlib.import_module(module)
    root.setLevel(level)
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    return sagemaker


def metric_definitions() -> list[dict]:
    """One SageMaker metric per `[metric] name=value` line of the training loop (training.runner.emit_metric)."""
    return [{"Name": name, "Regex": rf"\[metric\] {name}=([-+0-9.eE]+)"} for name in METRICS]


def write_source_dir(
    dest: Path, packages: Sequence, entry_point: str, module: str, requirements: Sequence[str]
) -> Path:
    """A SageMaker source_dir: a copy of each of `packages` (imported package objects), the script
    `entry_point` that runs `module`'s main(), and requirements.txt (what the container pip-installs)."""
    dest.mkdir(parents=True, exist_ok=True)
    for package in packages:
        shutil.copytree(
            Path(package.__file__).parent,
            dest / package.__name__,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    (dest / entry_point).write_text(
        f'"""SageMaker entry point: the project\'s {module}."""\n'
        f"import sys\n\nfrom {module} import main\n\n"
        'if __name__ == "__main__":\n    sys.exit(main())\n'
    )
    (dest / "requirements.txt").write_text("\n".join(requirements) + "\n")
    return dest


def stage_source(dest: Path) -> Path:
    """The script-mode source_dir: the `training` package (and `common`, which it imports), the entry point
    and requirements.txt."""
    return write_source_dir(dest, (common, training), ENTRY_POINT, "training.train", REQUIREMENTS)


def parse_s3_uri(uri: str, what: str) -> tuple[str, str]:
    """s3://bucket/key -> (bucket, key); SageMakerJobError naming `what` and the URI otherwise."""
    match = _S3_URI.match(uri)
    if not match:
        raise SageMakerJobError(f"{what}: '{uri}' is not an S3 URI (expected s3://bucket/prefix)")
    return match.group(1), (match.group(2) or "/").lstrip("/")


@dataclass
class JobRequest:
    """What `lensops sagemaker train` was asked for (parsed once from the command line)."""

    data: str
    role: str
    bucket: str
    hyperparameters: dict = field(default_factory=dict)
    validation: Optional[str] = None
    prefix: str = "lensops"
    instance_type: str = "ml.c5.xlarge"
    instance_count: int = 1
    spot: bool = False
    max_run: int = 24 * 3600
    max_wait: Optional[int] = None
    checkpoint_s3_uri: Optional[str] = None
    output_path: Optional[str] = None
    base_job_name: str = "lensops-train"
    region: Optional[str] = None


class SageMakerJobs:
    """Launch, wait for and download SageMaker training jobs (one boto3 session; AWS_ENDPOINT_URL is
    honoured by every client, which is how the tests reach moto's server)."""

    def __init__(self, region: Optional[str] = None):
        import boto3

        from botocore.exceptions import BotoCoreError

        region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        try:
            self.boto = boto3.Session(region_name=region)
            credentials = self.boto.get_credentials()
        except BotoCoreError as exc:  # e.g. ProfileNotFound for a mistyped AWS_PROFILE
            raise SageMakerJobError(f"AWS credentials: {exc}") from None
        if credentials is None:
            raise SageMakerJobError(
                "no AWS credentials found: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or run where an instance role is available"
            )
        self.region = region
        self.s3 = self.boto.client("s3")
        self.client = self.boto.client("sagemaker")

    # -- checks before anything is sent ------------------------------------------------------
    def role_arn(self, role: str) -> str:
        """A role name or ARN -> the ARN; SageMakerJobError naming it when IAM does not know it."""
        from botocore.exceptions import BotoCoreError, ClientError

        name = role.rsplit("/", 1)[-1]
        try:
            return self.boto.client("iam").get_role(RoleName=name)["Role"]["Arn"]
        except BotoCoreError as exc:  # no connection, no region, ...
            raise SageMakerJobError(f"role '{role}': IAM not reachable ({exc})") from None
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("NoSuchEntity", "404"):
                raise SageMakerJobError(f"role '{role}' does not exist in this account (IAM)") from None
            if role.startswith("arn:") and code in ("AccessDenied", "AccessDeniedException"):
                return role  # not allowed to read IAM: the ARN as given (SageMaker checks it)
            raise SageMakerJobError(f"role '{role}': {exc}") from None

    def check_bucket(self, bucket: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.s3.head_bucket(Bucket=bucket)
        except BotoCoreError as exc:
            raise SageMakerJobError(f"bucket '{bucket}': S3 not reachable ({exc})") from None
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            reason = "does not exist" if code in ("404", "NoSuchBucket") else f"is not accessible ({code})"
            raise SageMakerJobError(f"bucket '{bucket}' {reason}") from None

    def check_prefix(self, uri: str, what: str) -> None:
        bucket, key = parse_s3_uri(uri, what)
        self.check_bucket(bucket)
        if not self.s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1).get("KeyCount"):
            raise SageMakerJobError(f"{what}: nothing under {uri}")

    # -- channels --------------------------------------------------------------------------------
    def channel(self, source: str, name: str, request: JobRequest, upload: bool) -> tuple[str, str]:
        """(S3 URI, lineage tag) for a channel: an S3 URI is checked, a local folder uploaded."""
        if source.startswith("s3:") or "://" in source:
            if upload:
                self.check_prefix(source, f"channel '{name}'")
            else:
                parse_s3_uri(source, f"channel '{name}'")
            return source, source
        folder = Path(source)
        if not folder.is_dir():
            raise SageMakerJobError(f"channel '{name}': {folder} is not a folder or an s3:// URI")
        digest = data_hash(folder)
        uri = f"s3://{request.bucket}/{request.prefix}/data/{name}-{digest[:12]}"
        if upload:
            from boto3.exceptions import S3UploadFailedError
            from botocore.exceptions import BotoCoreError, ClientError

            try:
                for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                    key = f"{request.prefix}/data/{name}-{digest[:12]}/{path.relative_to(folder).as_posix()}"
                    self.s3.upload_file(str(path), request.bucket, key)
            except (S3UploadFailedError, BotoCoreError, ClientError) as exc:
                raise SageMakerJobError(f"channel '{name}': uploading {folder} to {uri} failed: {exc}") from None
        return uri, digest

    # -- the job -----------------------------------------------------------------------------------
    def estimator(
        self,
        request: JobRequest,
        role_arn: str,
        source_dir: str,
        tags: list[dict],
        session=None,
        job_name: Optional[str] = None,
    ):
        """The SDK's MXNet estimator for `request` (`session`: a PipelineSession inside a pipeline)."""
        sagemaker = import_sagemaker()
        MXNet = sagemaker.mxnet.MXNet

        session = session or sagemaker.Session(boto_session=self.boto, default_bucket=request.bucket)
        checkpoint = request.checkpoint_s3_uri
        if request.spot and not checkpoint:
            # one folder per job: SageMaker copies it in at every (re)start of that job only
            checkpoint = f"s3://{request.bucket}/{request.prefix}/checkpoints/{job_name or request.base_job_name}"
        return MXNet(
            entry_point=ENTRY_POINT,
            source_dir=source_dir,
            role=role_arn,
            framework_version=FRAMEWORK_VERSION,
            py_version=PY_VERSION,
            instance_count=request.instance_count,
            instance_type=request.instance_type,
            hyperparameters=request.hyperparameters,
            metric_definitions=metric_definitions(),
            use_spot_instances=request.spot,
            max_run=request.max_run,
            max_wait=(request.max_wait or request.max_run * 2) if request.spot else None,
            checkpoint_s3_uri=checkpoint,
            output_path=request.output_path or f"s3://{request.bucket}/{request.prefix}/jobs",
            base_job_name=request.base_job_name,
            tags=tags,
            sagemaker_session=session,
            disable_profiler=True,
            debugger_hook_config=False,
        )

    def launch(self, request: JobRequest, dry_run: bool = False) -> dict:
        """Check, upload and create the job; return {"job_name", "request"}. A dry run checks the
        S3 URIs' form, uploads nothing, and returns the CreateTrainingJob request without sending it."""
        if request.instance_count < 1:
            raise SageMakerJobError(f"--instance-count must be at least 1, got {request.instance_count}")
        parse_s3_uri(f"s3://{request.bucket}/", "--bucket")
        for uri, what in ((request.output_path, "--output-path"), (request.checkpoint_s3_uri, "--checkpoint-s3-uri")):
            if uri:
                parse_s3_uri(uri, what)
        role = request.role if dry_run and request.role.startswith("arn:") else self.role_arn(request.role)
        if not dry_run:
            self.check_bucket(request.bucket)
        inputs, tags = {}, [{"Key": "git_commit", "Value": git_commit(Path.cwd()) or "unknown"}]
        for name, source in (("train", request.data), ("validation", request.validation)):
            if source:
                inputs[name], lineage = self.channel(source, name, request, upload=not dry_run)
                tags.append({"Key": f"data_{name}", "Value": lineage[:256]})
        sent: dict = {}

        def capture(params, **_):
            sent.update(params)
            if dry_run:
                raise _DryRun()

        self.boto.events.register("provide-client-params.sagemaker.CreateTrainingJob", capture)
        with tempfile.TemporaryDirectory(prefix="lensops-source-") as tmp:
            source_dir = (
                f"s3://{request.bucket}/{request.prefix}/source/sourcedir.tar.gz"
                if dry_run
                else str(stage_source(Path(tmp) / "source"))
            )
            from sagemaker.utils import name_from_base

            job_name = name_from_base(request.base_job_name)
            estimator = self.estimator(request, role, source_dir, tags, job_name=job_name)
            try:
                estimator.fit(inputs, wait=False, logs=False, job_name=job_name)
            except _DryRun:
                pass
            except Exception as exc:  # botocore ClientError from CreateTrainingJob (a quota), an S3 upload
                raise SageMakerJobError(f"CreateTrainingJob refused: {exc}") from None
        return {"job_name": sent.get("TrainingJobName"), "request": sent}

    def wait(self, job_name: str, logs: bool = True, poll: float = 5.0) -> dict:
        """Stream the job's status (and CloudWatch logs) until it ends; return its description.
        JobFailed with SageMaker's FailureReason for a failed job, and for a stopped one."""
        sagemaker = import_sagemaker()

        description = self.describe(job_name)
        if description["TrainingJobStatus"] not in TERMINAL:
            session = sagemaker.Session(boto_session=self.boto)
            try:
                if logs:
                    session.logs_for_job(job_name, wait=True, poll=poll)
                else:
                    session.wait_for_job(job_name, poll=poll)
            except Exception as exc:  # the SDK raises for a failed/stopped job; logs may be unreadable
                log.info("waiting for %s ended with %s", job_name, type(exc).__name__)
            description = self.describe(job_name)
            if description["TrainingJobStatus"] not in TERMINAL:
                raise SageMakerJobError(
                    f"training job '{job_name}' is still {description['TrainingJobStatus']}; "
                    f"follow it with: lensops sagemaker attach {job_name}"
                )
        print(f"{job_name}: {description['TrainingJobStatus']}", flush=True)
        outcome(description)
        return description

    def describe(self, job_name: str) -> dict:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.describe_training_job(TrainingJobName=job_name)
        except BotoCoreError as exc:
            raise SageMakerJobError(f"training job '{job_name}': SageMaker not reachable ({exc})") from None
        except ClientError as exc:
            raise SageMakerJobError(
                f"training job '{job_name}': {exc.response.get('Error', {}).get('Message', exc)}"
            ) from None

    def download_model(self, description: dict, out: Path) -> Path:
        """The job's model.tar.gz into out/ (written under a temporary name, then renamed)."""
        uri = description.get("ModelArtifacts", {}).get("S3ModelArtifacts")
        if not uri:
            raise SageMakerJobError(f"training job '{description['TrainingJobName']}' has no model artifact")
        bucket, key = parse_s3_uri(uri, "ModelArtifacts")
        from botocore.exceptions import ClientError

        try:
            self.s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            raise SageMakerJobError(
                f"training job '{description['TrainingJobName']}' completed but {uri} "
                f"cannot be read ({exc.response.get('Error', {}).get('Code')})"
            ) from None
        target = out / "model.tar.gz"
        try:
            with atomic_path(target) as tmp:
                self.s3.download_file(bucket, key, str(tmp))
        except ClientError as exc:
            raise SageMakerJobError(
                f"training job '{description['TrainingJobName']}': downloading {uri} failed "
                f"({exc.response.get('Error', {}).get('Code')})"
            ) from None
        return target


def unpack_model(archive: Path, out: Path, job_name: str, artifact_uri: str) -> Path:
    """model.tar.gz -> out/model/, the model folder evaluate/optimize/package read (a `models` entry's
    model_dir). The job's name and artifact URI join model.json's lineage, so the registered version
    names the job it came from. Written beside and renamed into place; an archive that is unsafe or
    holds no LensOps model.json is one SageMakerJobError naming it."""
    from training.errors import ConfigError
    from training.init_source import extract_archive

    out.mkdir(parents=True, exist_ok=True)
    context = f"training job '{job_name}': "
    try:
        folder = extract_archive(archive, out, context)
    except ConfigError as exc:
        raise SageMakerJobError(str(exc)) from None
    try:
        meta = json.loads((folder / "model.json").read_text())
        if not isinstance(meta, dict) or "task" not in meta or "files" not in meta:
            raise ValueError("no task or files")
    except (OSError, ValueError) as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise SageMakerJobError(f"{context}{archive.name} holds no LensOps model.json ({exc})") from None
    meta["lineage"] = {**meta.get("lineage", {}), "sagemaker_job": job_name, "model_artifact": artifact_uri}
    (folder / "model.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    target = out / "model"
    if target.exists():
        shutil.rmtree(target)
    os.replace(folder, target)
    return target


def outcome(description: dict) -> None:
    """Nothing for a completed job; JobFailed naming the job and SageMaker's reason otherwise."""
    status, name = description["TrainingJobStatus"], description["TrainingJobName"]
    if status == "Failed":
        raise JobFailed(f"training job '{name}' failed: {description.get('FailureReason', 'no reason given')}")
    if status == "Stopped":
        raise JobFailed(
            f"training job '{name}' was stopped ({description.get('SecondaryStatus', 'Stopped')}); "
            f"no model was taken from it"
        )
    if status != "Completed":
        raise JobFailed(f"training job '{name}' ended as {status}")


def print_request(request: dict) -> None:
    json.dump(request, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


class _DryRun(Exception):
    """Raised from the CreateTrainingJob hook to stop the SDK before it sends anything."""
