"""`lensops` command line. Each subcommand imports only the room it needs, so device-side
commands never pull in mxnet, gluoncv, sagemaker or dvc."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

from common.errors import CLI_ERRORS, UserError, print_error
from pipelines.stages import STAGES


def _data_synth(args: argparse.Namespace) -> int:
    from training.datasets import synth, video

    if args.task in ("classification", "silhouettes"):
        synth.synth_classification(
            args.out, args.n, args.seed, size=args.size or 64, silhouettes=args.task == "silhouettes"
        )
    elif args.task == "detection":
        synth.synth_detection(args.out, args.n, args.seed, size=args.size or 160)
    else:
        video.synth_video(args.out, args.n, args.seed)
    print(f"wrote {args.task} data to {args.out}")
    return 0


def _data_check(args: argparse.Namespace) -> int:

    from training.datasets.check import check_dataset
    from training.datasets.formats import load_dataset

    index = load_dataset(args.root, args.task, args.format)
    clean, report = check_dataset(index, args.policy)
    print(report.summary())
    if args.report:
        from common.files import write_json

        write_json(args.report, report.to_dict())
    return 0


def _import_options(args: argparse.Namespace):
    from training.datasets.capture_import import ImportOptions

    given = {
        name: getattr(args, name)
        for name in ("near_duplicate_bits", "segment_gap_s", "segment_max_s", "val_fraction", "test_fraction")
    }
    return ImportOptions(**{k: v for k, v in given.items() if v is not None})


def _data_import_capture(args: argparse.Namespace) -> int:
    from training.datasets.capture_import import DROP_REASONS, import_capture

    record = import_capture(
        args.capture, args.out, _import_options(args), merge=args.merge, reviewed=args.reviewed, task=args.task
    )
    reasons = Counter(why["reason"] for why in record["dropped"].values())
    sizes = "/".join(str(record["imported"][s]) for s in ("train", "val", "test"))
    print(
        f"{args.out}: {sum(record['imported'].values())} of {record['captures_read']} captures imported "
        f"({record['task']}, {record['segments']} time segments, train/val/test = {sizes}"
        f"{', merged into ' + str(args.merge) if args.merge else ''}"
        f"{', reviewed labels from ' + str(args.reviewed) if args.reviewed else ', device pre-labels'})"
    )
    for reason, count in sorted(reasons.items()):
        print(f"  dropped {count}: {DROP_REASONS[reason]}")
    return 0


def _data_export_review(args: argparse.Namespace) -> int:
    from training.datasets.capture_import import export_for_review

    summary = export_for_review(args.capture, args.out, _import_options(args), merge=args.merge)
    layout = "Pascal VOC" if summary["task"] == "detection" else "ImageFolder"
    print(
        f"{args.out}: {summary['frames']} frames for review ({layout}, pre-labels from the device; "
        f"{summary['dropped']} duplicates left out). Mark a frame to drop with the label "
        f"'{summary['drop_label']}' or delete it."
    )
    return 0


def _train(args: argparse.Namespace, rest: list[str]) -> int:
    from training.train import main as train_main

    return train_main(rest)


def _sagemaker_train(args: argparse.Namespace, rest: list[str]) -> int:
    if args.local:
        from pipelines.sagemaker.local import run_local_training

        if args.out is None:
            raise UserError("--local needs --out (where model.tar.gz goes)")
        return run_local_training(
            Path(args.data),
            args.out,
            rest,
            validation=Path(args.validation) if args.validation else None,
            keep=args.keep,
            instance_count=args.instance_count,
        )
    from pipelines.sagemaker.job import JobRequest, SageMakerJobs, print_request
    from pipelines.sagemaker.local import hyperparameters_from_args

    missing = [flag for flag, value in (("--role", args.role), ("--bucket", args.bucket)) if not value]
    if missing:
        raise UserError(f"a SageMaker job needs {' and '.join(missing)} (or --local to emulate one)")
    hyperparameters = hyperparameters_from_args(rest)
    request = JobRequest(
        data=args.data,
        validation=args.validation,
        role=args.role,
        bucket=args.bucket,
        hyperparameters=hyperparameters,
        prefix=args.prefix.strip("/"),
        instance_type=args.instance_type,
        instance_count=args.instance_count,
        spot=args.spot,
        max_run=args.max_run,
        max_wait=args.max_wait,
        checkpoint_s3_uri=args.checkpoint_s3_uri,
        output_path=args.output_path,
        base_job_name=args.job_name_prefix,
    )
    jobs = SageMakerJobs()
    launched = jobs.launch(request, dry_run=args.dry_run)
    if args.dry_run:
        print_request(launched["request"])
        return 0
    name = launched["job_name"]
    print(f"training job: {name}", flush=True)
    if args.no_wait:
        print(f"follow it with: lensops sagemaker attach {name}", flush=True)
        return 0
    return _wait_and_download(jobs, name, args.out)


def _sagemaker_attach(args: argparse.Namespace) -> int:
    from pipelines.sagemaker.job import SageMakerJobs

    return _wait_and_download(SageMakerJobs(), args.job, args.out)


def _sagemaker_pipeline(args: argparse.Namespace) -> int:
    from pipelines.sagemaker import pipeline
    from pipelines.sagemaker.job import SageMakerJobError

    if args.pipe_command == "upsert":
        if args.data_uri:
            from pipelines.sagemaker.job import parse_s3_uri

            parse_s3_uri(args.data_uri, "--data-uri")
        hyperparameters, section = pipeline.training_section(args.params, args.section)
        missing = [key for key in ("model_name", "task") if not section.get(key)]
        if missing:
            raise SageMakerJobError(f"{args.params}: section '{args.section}' has no {missing[0]}")
        request = pipeline.PipelineRequest(
            role=args.role,
            bucket=args.bucket,
            model_name=section["model_name"],
            task=section["task"],
            hyperparameters={k: v for k, v in hyperparameters.items() if k != "epochs"},
            params=args.params,
            prefix=args.prefix.strip("/"),
            name=args.name,
            data_uri=args.data_uri or "",
            epochs=args.epochs or int(section.get("epochs", 30)),
            train_instance_type=args.instance_type,
            processing_instance_type=args.instance_type,
            min_metric=args.min_metric,
        )
        out = args.definition_out or Path("reports/sagemaker") / f"{request.pipeline_name}.json"
        result = pipeline.upsert(request, out)
        print(f"pipeline: {result['arn']}\ndefinition: {result['definition']}", flush=True)
    elif args.pipe_command == "start":
        values = {}
        for item in args.param:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise SageMakerJobError(f"--param expects KEY=VALUE, got '{item}'")
            values[key] = value
        print(f"execution: {pipeline.start(args.name, values)}", flush=True)
    else:
        for row in pipeline.status(args.name):
            print(f"{row['status']:<10} {row['started']}  {row['arn']}")
    return 0


def _wait_and_download(jobs, name: str, out: Optional[Path]) -> int:
    from pipelines.sagemaker.job import unpack_model

    description = jobs.wait(name)
    out = out or Path("sagemaker-jobs") / name
    path = jobs.download_model(description, out)
    uri = description["ModelArtifacts"]["S3ModelArtifacts"]
    print(f"model artifact: {path}  (from {uri})", flush=True)
    model = unpack_model(path, out, name, uri)
    print(f"model folder: {model}  (a `models` entry's model_dir for evaluate/optimize/package/register)", flush=True)
    return 0


def _pipeline(args: argparse.Namespace, rest: list[str]) -> int:
    from pipelines.cli import main as pipeline_main

    return pipeline_main([args.command, *rest])


def _edge(args: argparse.Namespace, rest: list[str]) -> int:
    from edge.cli import main as edge_main  # device side: imports edge code only

    return edge_main(rest)


def _fleet(args: argparse.Namespace, rest: list[str]) -> int:
    from pipelines.fleet.cli import main as fleet_main

    return fleet_main(rest)


def _broker(args: argparse.Namespace, rest: list[str]) -> int:
    from edge.broker import main as broker_main

    return broker_main(rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lensops", description="LensOps: train, package and run camera models.")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="demo data and data set checks").add_subparsers(
        dest="data_command", required=True
    )
    synth = data.add_parser("synth", help="generate deterministic demo data")
    synth.add_argument(
        "--task",
        choices=["classification", "silhouettes", "detection", "video"],
        required=True,
        help="silhouettes: classification data of white shapes on black, centred (the demo classifier's first lesson)",
    )
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--n", type=int, required=True, help="images (or video frames)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument(
        "--size", type=int, help="image side in pixels (detection: the height; frames are square, 4:3 or 16:9)"
    )
    synth.set_defaults(func=_data_synth)
    check = data.add_parser("check", help="check a data set (ImageFolder, Pascal VOC, COCO)")
    check.add_argument("root", type=Path)
    check.add_argument("--task", choices=["classification", "detection"], required=True)
    check.add_argument("--format", default="auto", choices=["auto", "imagefolder", "voc", "coco"])
    check.add_argument("--policy", default="fail", choices=["fail", "skip"])
    check.add_argument("--report", type=Path, help="also write the report as JSON")
    check.set_defaults(func=_data_check)
    importer = data.add_parser(
        "import-capture",
        help="turn a device's capture folder into a data set "
        "(deduplicated, split by source and time; Pascal VOC or ImageFolder)",
    )
    importer.add_argument("--out", type=Path, required=True, help="data set folder to write (replaced atomically)")
    importer.add_argument("--merge", type=Path, help="existing data set to merge into (copied into --out)")
    importer.add_argument(
        "--reviewed",
        type=Path,
        help="reviewed export (lensops data export-review, then a "
        "labelling tool): its labels replace the pre-labels; frames it lacks are dropped",
    )
    importer.add_argument("--task", choices=["classification", "detection"], help="default: the captures' task")
    review = data.add_parser(
        "export-review",
        help="write deduplicated captures with their pre-labels for "
        "review in a labelling tool (Pascal VOC; ImageFolder for classification)",
    )
    review.add_argument("--out", type=Path, required=True, help="review folder to write (replaced atomically)")
    review.add_argument(
        "--merge",
        type=Path,
        help="the data set the import will merge into (frames duplicating its images are left out)",
    )
    for p in (importer, review):
        p.add_argument("capture", type=Path, help="capture folder (the edge runner's capture.dir)")
        # defaults: training.datasets.capture_import.ImportOptions
        p.add_argument(
            "--near-duplicate-bits",
            type=int,
            help="frames whose 256-bit difference hashes differ in "
            "at most this many bits are near-identical; the oldest is kept (default 8)",
        )
        p.add_argument(
            "--segment-gap-s", type=float, help="a pause longer than this starts a new time segment (default 60)"
        )
        p.add_argument(
            "--segment-max-s", type=float, help="a time segment is cut once it spans this long (default 600)"
        )
        p.add_argument("--val-fraction", type=float, help="share of each source's frames for val (default 0.15)")
        p.add_argument("--test-fraction", type=float, help="share of each source's frames for test (default 0.15)")
    importer.set_defaults(func=_data_import_capture)
    review.set_defaults(func=_data_export_review)

    train = sub.add_parser(
        "train", help="train or fine-tune (same options as python -m training.train)", add_help=False
    )
    train.set_defaults(func=_train, passthrough=True)

    sagemaker = sub.add_parser("sagemaker", help="SageMaker jobs").add_subparsers(dest="sm_command", required=True)
    sm_train = sagemaker.add_parser(
        "train",
        help="launch a SageMaker training job of the project's entry point "
        "(script mode, MXNet 1.9 container), or emulate one with --local; "
        "extra options are passed as hyperparameters",
    )
    sm_train.add_argument(
        "--data",
        required=True,
        help="training channel: an s3:// URI, or a local folder (uploaded first; with --local: the folder itself)",
    )
    sm_train.add_argument("--validation", help="validation channel (s3:// URI or folder)")
    sm_train.add_argument(
        "--out", type=Path, help="where model.tar.gz goes (default ./sagemaker-jobs/JOB; required with --local)"
    )
    sm_train.add_argument(
        "--instance-count", type=int, default=1, help="hosts; 2 or more train with MXNet's parameter server (dist_sync)"
    )
    sm_train.add_argument("--local", action="store_true", help="emulate the container under a temporary /opt/ml root")
    sm_train.add_argument("--keep", action="store_true", help="--local: keep the emulated /opt/ml tree")
    sm_train.add_argument("--role", help="IAM role SageMaker runs the job as (name or ARN)")
    sm_train.add_argument("--bucket", help="S3 bucket for uploaded data, code, checkpoints and output")
    sm_train.add_argument("--prefix", default="lensops", help="key prefix in the bucket (default lensops)")
    sm_train.add_argument("--instance-type", default="ml.c5.xlarge", help="default ml.c5.xlarge")
    sm_train.add_argument("--spot", action="store_true", help="managed spot training (resumes from checkpoints)")
    sm_train.add_argument("--max-run", type=int, default=24 * 3600, help="seconds (default 86400)")
    sm_train.add_argument(
        "--max-wait", type=int, help="--spot: seconds including waiting for capacity (default twice --max-run)"
    )
    sm_train.add_argument(
        "--checkpoint-s3-uri",
        help="--spot: where checkpoints sync (default s3://BUCKET/PREFIX/checkpoints/JOB-NAME-PREFIX)",
    )
    sm_train.add_argument("--output-path", help="S3 URI for the job's output (default s3://BUCKET/PREFIX/jobs)")
    sm_train.add_argument("--job-name-prefix", default="lensops-train", help="job names are PREFIX-<timestamp>")
    sm_train.add_argument(
        "--no-wait",
        action="store_true",
        help="return once the job is created (lensops sagemaker attach JOB waits later)",
    )
    sm_train.add_argument(
        "--dry-run", action="store_true", help="print the CreateTrainingJob request; send and upload nothing"
    )
    sm_train.set_defaults(func=_sagemaker_train, passthrough=True)
    sm_pipe = sagemaker.add_parser(
        "pipeline", help="the SageMaker Pipeline: Train -> Ship -> Gate -> Register"
    ).add_subparsers(dest="pipe_command", required=True)
    upsert = sm_pipe.add_parser("upsert", help="create or update the pipeline for a params.yaml training section")
    upsert.add_argument("--role", required=True, help="IAM role (name or ARN) for the pipeline and its jobs")
    upsert.add_argument("--bucket", required=True, help="S3 bucket for code, data, output and packages")
    upsert.add_argument("--section", required=True, help="params.yaml training section (e.g. train_classifier)")
    upsert.add_argument("--params", type=Path, default=Path("params.yaml"))
    upsert.add_argument("--prefix", default="lensops")
    upsert.add_argument("--name", help="pipeline name (default lensops-<model_name>)")
    upsert.add_argument("--data-uri", help="default of the DataUri parameter (s3://...)")
    upsert.add_argument("--epochs", type=int, help="default of the Epochs parameter (default: the section's)")
    upsert.add_argument("--min-metric", type=float, default=0.0, help="default of MinMetric (test accuracy / mAP)")
    upsert.add_argument("--instance-type", default="ml.c5.xlarge", help="training and processing instances")
    upsert.add_argument("--definition-out", type=Path, help="default reports/sagemaker/<name>.json")
    upsert.set_defaults(func=_sagemaker_pipeline)
    start = sm_pipe.add_parser("start", help="start an execution")
    start.add_argument("name")
    start.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a pipeline parameter (DataUri, Epochs, TrainInstanceType, ProcessingInstanceType, MinMetric)",
    )
    start.set_defaults(func=_sagemaker_pipeline)
    state = sm_pipe.add_parser("status", help="the latest executions")
    state.add_argument("name")
    state.set_defaults(func=_sagemaker_pipeline)
    sm_attach = sagemaker.add_parser(
        "attach", help="wait for a training job (status and logs), then download its model.tar.gz"
    )
    sm_attach.add_argument("job", help="training job name")
    sm_attach.add_argument("--out", type=Path, help="default ./sagemaker-jobs/JOB")
    sm_attach.set_defaults(func=_sagemaker_attach)

    for name, text in STAGES.items():  # the pipeline's own list: pipelines.cli parses their options
        sub.add_parser(name, help=text, add_help=False).set_defaults(func=_pipeline, passthrough=True)
    sub.add_parser(
        "edge", help="the device runner (lensops edge run --config device.yaml)", add_help=False
    ).set_defaults(func=_edge, passthrough=True)
    sub.add_parser(
        "fleet", help="fleet rollouts, status, shadow reports and access control over MQTT", add_help=False
    ).set_defaults(func=_fleet, passthrough=True)
    sub.add_parser("broker", help="embedded MQTT broker for a laptop (amqtt)", add_help=False).set_defaults(
        func=_broker, passthrough=True
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    try:
        if getattr(args, "passthrough", False):
            return args.func(args, rest)
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        return args.func(args)
    except CLI_ERRORS as exc:  # common.errors: the one error contract; anything else is a bug (traceback)
        return print_error(exc)


if __name__ == "__main__":
    sys.exit(main())
