"""A SageMaker Pipeline for the loop: Train -> Ship -> Gate -> Register (or GateFailed).

  Train        TrainingStep: the project's entry point in the MXNet 1.9 container (as
               `lensops sagemaker train`), hyperparameters from a params.yaml training section,
               `epochs` from the pipeline parameter Epochs, channel `train` = DataUri.
  Ship         ProcessingStep (FrameworkProcessor, same container, the project's source): the
               training step's model.tar.gz -> `lensops evaluate` -> `lensops optimize` ->
               `lensops package build` (pipelines.sagemaker.steps.ship); evaluation.json is the
               property file EvaluationReport.
  Gate         ConditionStep: EvaluationReport.parity_ok == true and EvaluationReport.value >= MinMetric.
  Register     ProcessingStep: `lensops register` into the SageMaker Model Registry (group = model
               name, PendingManualApproval) then `lensops promote`, which approves it only when it beats
               the approved champion (and publishes the fleet notice when configured).
  GateFailed   FailStep naming the figure that failed.

Registering through the project's own `register` rather than the SDK's RegisterModel step keeps one
registration path: a device pulls a version by the sha256 and package URI the project writes into
CustomerMetadataProperties, which a RegisterModel step cannot compute.

Parameters: DataUri (s3:// data set root), Epochs, TrainInstanceType, ProcessingInstanceType, MinMetric.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from pipelines.sagemaker.job import (
    FRAMEWORK_VERSION,
    PY_VERSION,
    REQUIREMENTS,
    JobRequest,
    SageMakerJobError,
    SageMakerJobs,
    import_sagemaker,
    stage_source,
    write_source_dir,
)

STEP_ENTRY = "lensops_pipeline_step.py"
# the pipeline steps run evaluate / optimize / package / register / promote: the [pipeline] extra's needs
STEP_REQUIREMENTS = REQUIREMENTS + [
    "onnx>=1.17,<1.19",
    "onnxruntime>=1.17",
    "onnxscript",
    "ml_dtypes",
    "sympy",
    "mlflow-skinny>=2.10",
    "boto3",
    "paho-mqtt>=2.0",
    "cryptography>=41",
    "jsonschema>=4",
    # the container is Python 3.8: pydantic evaluates list[...] / dict[...]
    # annotations with this backport; importlib.resources.files is 3.9+
    "eval_type_backport; python_version < '3.10'",
    "importlib_resources; python_version < '3.9'",
]
PATH_KEYS = {
    "data",
    "val_data",
    "model_dir",
    "checkpoint_dir",
    "metrics_file",
    "plots_dir",
    "init_from",
    "pretrained_cache",
    "tracking",
    "progress",
    "resume",
}
PROCESSING = "/opt/ml/processing"
log = logging.getLogger(__name__)


@dataclass
class PipelineRequest:
    """What `lensops sagemaker pipeline upsert` builds: one pipeline per registered model."""

    role: str
    bucket: str
    model_name: str
    task: str
    hyperparameters: dict = field(default_factory=dict)
    params: Path = Path("params.yaml")
    prefix: str = "lensops"
    name: Optional[str] = None
    data_uri: str = ""
    epochs: int = 30
    train_instance_type: str = "ml.c5.xlarge"
    processing_instance_type: str = "ml.c5.xlarge"
    min_metric: float = 0.0

    @property
    def pipeline_name(self) -> str:
        return self.name or f"lensops-{self.model_name}"


def training_section(params: Path, section: str) -> tuple[dict, dict]:
    """(hyperparameters, the section) from a params.yaml training section: paths and local-only keys
    are left out (SageMaker gives the channels and /opt/ml folders)."""
    from training.config import load_section

    values = load_section(Path(params), section)  # ConfigError naming the file and section
    try:
        int(values.get("epochs", 0))
    except (TypeError, ValueError):
        raise SageMakerJobError(f"{params}: {section}.epochs: {values['epochs']!r} is not a whole number") from None
    if values.get("init_from"):
        # a local path means nothing inside SageMaker; the pipeline trains from scratch (or --pretrained)
        log.warning(
            "%s: %s.init_from (%s) is not passed to the pipeline's training step", params, section, values["init_from"]
        )
    hyperparameters = {k: str(v) for k, v in values.items() if k not in PATH_KEYS and v is not None}
    return hyperparameters, values


def stage_pipeline_source(dest: Path, params: Path, request: PipelineRequest) -> Path:
    """The processing steps' source_dir: the project's packages, the step entry point, requirements
    and a params.yaml whose registry is the SageMaker Model Registry in the pipeline's bucket."""
    import edge
    import pipelines

    stage_source(dest)  # the training step's entry point and packages; the processing steps' next to them
    write_source_dir(dest, (edge, pipelines), STEP_ENTRY, "pipelines.sagemaker.steps", STEP_REQUIREMENTS)
    config = yaml.safe_load(Path(params).read_text()) or {}
    pipeline = dict(config.get("pipeline") or {})
    pipeline["registry"] = {"type": "sagemaker", "s3_bucket": request.bucket, "s3_prefix": f"{request.prefix}/packages"}
    (dest / "params.yaml").write_text(yaml.safe_dump({"pipeline": pipeline}, sort_keys=False))
    return dest


def build_pipeline(request: PipelineRequest, jobs: SageMakerJobs, role_arn: str, source_dir: Path):
    """The sagemaker.workflow Pipeline object (nothing is sent; building uploads the sources to S3)."""
    sagemaker = import_sagemaker(
        "sagemaker.inputs",
        "sagemaker.processing",
        "sagemaker.workflow.condition_step",
        "sagemaker.workflow.conditions",
        "sagemaker.workflow.fail_step",
        "sagemaker.workflow.functions",
        "sagemaker.workflow.parameters",
        "sagemaker.workflow.pipeline",
        "sagemaker.workflow.pipeline_context",
        "sagemaker.workflow.properties",
        "sagemaker.workflow.steps",
    )
    from sagemaker.inputs import TrainingInput
    from sagemaker.processing import FrameworkProcessor, ProcessingInput, ProcessingOutput
    from sagemaker.workflow.condition_step import ConditionStep
    from sagemaker.workflow.conditions import ConditionEquals, ConditionGreaterThanOrEqualTo
    from sagemaker.workflow.fail_step import FailStep
    from sagemaker.workflow.functions import Join, JsonGet
    from sagemaker.workflow.parameters import ParameterFloat, ParameterInteger, ParameterString
    from sagemaker.workflow.pipeline import Pipeline
    from sagemaker.workflow.pipeline_context import PipelineSession
    from sagemaker.workflow.properties import PropertyFile
    from sagemaker.workflow.steps import ProcessingStep, TrainingStep

    session = PipelineSession(boto_session=jobs.boto, default_bucket=request.bucket)
    data_uri = ParameterString(
        "DataUri", default_value=request.data_uri or f"s3://{request.bucket}/{request.prefix}/data"
    )
    epochs = ParameterInteger("Epochs", default_value=request.epochs)
    train_type = ParameterString("TrainInstanceType", default_value=request.train_instance_type)
    processing_type = ParameterString("ProcessingInstanceType", default_value=request.processing_instance_type)
    min_metric = ParameterFloat("MinMetric", default_value=request.min_metric)

    job = JobRequest(
        data="",
        role=role_arn,
        bucket=request.bucket,
        prefix=request.prefix,
        hyperparameters={**request.hyperparameters, "model_name": request.model_name, "epochs": epochs},
        instance_type=train_type,
        base_job_name=f"{request.pipeline_name}-train",
    )
    estimator = jobs.estimator(job, role_arn, str(source_dir), tags=[], session=session)
    train = TrainingStep(name="Train", step_args=estimator.fit({"train": TrainingInput(data_uri)}))

    processor = FrameworkProcessor(
        estimator_cls=sagemaker.mxnet.MXNet,
        framework_version=FRAMEWORK_VERSION,
        py_version=PY_VERSION,
        role=role_arn,
        instance_count=1,
        instance_type=processing_type,
        sagemaker_session=session,
        base_job_name=f"{request.pipeline_name}-ship",
    )
    evaluation = PropertyFile(name="EvaluationReport", output_name="evaluation", path="evaluation.json")
    ship = ProcessingStep(
        name="Ship",
        property_files=[evaluation],
        step_args=processor.run(
            code=STEP_ENTRY,
            source_dir=str(source_dir),
            inputs=[
                ProcessingInput(
                    source=train.properties.ModelArtifacts.S3ModelArtifacts,
                    destination=f"{PROCESSING}/model",
                    input_name="model",
                ),
                ProcessingInput(source=data_uri, destination=f"{PROCESSING}/data", input_name="data"),
            ],
            outputs=[
                ProcessingOutput(output_name="evaluation", source=f"{PROCESSING}/evaluation"),
                ProcessingOutput(output_name="package", source=f"{PROCESSING}/package"),
            ],
            arguments=[
                "ship",
                "--model-dir",
                f"{PROCESSING}/model",
                "--data",
                f"{PROCESSING}/data",
                "--out",
                f"{PROCESSING}/evaluation",
                "--package-out",
                f"{PROCESSING}/package",
                "--model-name",
                request.model_name,
                "--job-name",
                train.properties.TrainingJobName,
            ],
        ),
    )

    register = ProcessingStep(
        name="Register",
        step_args=processor.run(
            code=STEP_ENTRY,
            source_dir=str(source_dir),
            inputs=[
                ProcessingInput(
                    source=ship.properties.ProcessingOutputConfig.Outputs["package"].S3Output.S3Uri,
                    destination=f"{PROCESSING}/package",
                    input_name="package",
                ),
                ProcessingInput(source=data_uri, destination=f"{PROCESSING}/data", input_name="data"),
            ],
            arguments=[
                "register",
                "--package-dir",
                f"{PROCESSING}/package",
                "--data",
                f"{PROCESSING}/data",
                "--model-name",
                request.model_name,
                "--task",
                request.task,
            ],
        ),
    )
    value = JsonGet(step_name=ship.name, property_file=evaluation, json_path="value")
    parity = JsonGet(step_name=ship.name, property_file=evaluation, json_path="parity_ok")
    failed = FailStep(
        name="GateFailed",
        error_message=Join(on=" ", values=["gate failed: parity_ok", parity, "metric", value, "minimum", min_metric]),
    )
    gate = ConditionStep(
        name="Gate",
        conditions=[
            ConditionEquals(left=parity, right=True),
            ConditionGreaterThanOrEqualTo(left=value, right=min_metric),
        ],
        if_steps=[register],
        else_steps=[failed],
    )
    return Pipeline(
        name=request.pipeline_name,
        parameters=[data_uri, epochs, train_type, processing_type, min_metric],
        steps=[train, ship, gate],
        sagemaker_session=session,
    )


def upsert(request: PipelineRequest, definition_out: Path, jobs: Optional[SageMakerJobs] = None) -> dict:
    """Create or update the pipeline; the definition JSON is also written to `definition_out`."""
    import tempfile

    jobs = jobs or SageMakerJobs()
    role_arn = jobs.role_arn(request.role)
    jobs.check_bucket(request.bucket)
    with tempfile.TemporaryDirectory(prefix="lensops-pipeline-") as tmp:
        source = stage_pipeline_source(Path(tmp) / "source", request.params, request)
        pipeline = build_pipeline(request, jobs, role_arn, source)
        try:
            definition = pipeline.definition()  # uploads the step sources to S3
            response = pipeline.upsert(role_arn=role_arn)
        except Exception as exc:  # botocore ClientError / S3UploadFailedError: one line naming the pipeline
            raise SageMakerJobError(f"pipeline '{request.pipeline_name}': upsert failed: {exc}") from None
        definition_out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = definition_out.with_name(definition_out.name + ".tmp")
        tmp_out.write_text(json.dumps(json.loads(definition), indent=2, sort_keys=True))
        tmp_out.replace(definition_out)
    return {"arn": response["PipelineArn"], "definition": str(definition_out)}


def start(name: str, parameters: dict, jobs: Optional[SageMakerJobs] = None) -> str:
    """Start an execution; returns its ARN."""
    jobs = jobs or SageMakerJobs()
    from botocore.exceptions import ClientError

    try:
        response = jobs.client.start_pipeline_execution(
            PipelineName=name, PipelineParameters=[{"Name": k, "Value": str(v)} for k, v in parameters.items()]
        )
    except ClientError as exc:
        raise SageMakerJobError(f"pipeline '{name}': {exc.response.get('Error', {}).get('Message', exc)}") from None
    return response["PipelineExecutionArn"]


def status(name: str, jobs: Optional[SageMakerJobs] = None, limit: int = 5) -> list[dict]:
    """The pipeline's latest executions, newest first: ARN, status, start time."""
    jobs = jobs or SageMakerJobs()
    from botocore.exceptions import ClientError

    try:
        summaries = jobs.client.list_pipeline_executions(PipelineName=name, MaxResults=limit)
    except ClientError as exc:
        raise SageMakerJobError(f"pipeline '{name}': {exc.response.get('Error', {}).get('Message', exc)}") from None
    return [
        {
            "arn": s["PipelineExecutionArn"],
            "status": s.get("PipelineExecutionStatus"),
            "started": str(s.get("StartTime")),
        }
        for s in summaries.get("PipelineExecutionSummaries", [])
    ]
