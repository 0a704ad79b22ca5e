"""One training run, end to end: data -> network -> epochs (checkpointed) -> test -> export -> tracking."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import mxnet as mx
import numpy as np
from mxnet import gluon
from tqdm.auto import tqdm  # a widget in Jupyter (ipywidgets), a text bar elsewhere

from common.files import write_json
from training import finetune, networks
from training.checkpoints import CheckpointStore
from training.config import TrainConfig
from training.datasets.check import check_dataset
from training.datasets.formats import load_dataset
from training.datasets.records import DatasetIndex
from training.errors import ConfigError, DatasetError
from training.init_source import SourceNetwork, resolve_init_from
from training.export import export_model
from training.lineage import data_hash, git_commit
from training.loaders import ClassificationSamples, DetectionSamples, make_loader
from training.plots import write_confusion, write_curves, write_pr_curves
from training.sagemaker_env import RunEnvironment
from training.schedule import EarlyStopping, lr_at
from training.tracking import Tracker, tracking_uri

log = logging.getLogger("lensops.training")


@dataclass
class RunResult:
    model_dir: Optional[Path]
    metrics: dict
    epochs_run: int
    run_id: Optional[str]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    mx.random.seed(seed)


def emit_metric(name: str, value: float, epoch: Optional[int] = None) -> None:
    """One metric per line, for SageMaker metric_definitions, e.g. regex 'val_accuracy=([0-9.]+)'."""
    suffix = f" epoch={epoch}" if epoch is not None else ""
    print(f"[metric] {name}={value:.6f}{suffix}", flush=True)


def prepare_data(cfg: TrainConfig) -> tuple[DatasetIndex, dict]:
    """Load and check the data set before anything is written."""
    index = load_dataset(cfg.data, cfg.task, cfg.data_format)
    if cfg.val_data:
        extra = load_dataset(cfg.val_data, cfg.task, cfg.data_format)
        if extra.classes != index.classes:
            raise DatasetError(f"{cfg.val_data}: classes {extra.classes} differ from {cfg.data}: {index.classes}")
        index.splits["val"] = extra.split("val") or [r for s in extra.splits.values() for r in s]
    index, report = check_dataset(index, cfg.check_policy)
    if report.skipped:
        log.warning("data set check skipped %d samples:\n%s", report.skipped, report.summary())
    if cfg.max_train_samples:
        index.splits["train"] = index.split("train")[: cfg.max_train_samples]
    return index, report.to_dict()


def _datasets(cfg: TrainConfig, index: DatasetIndex, size: int):
    if cfg.task == "classification":
        make = lambda split, train: ClassificationSamples(index.split(split), size, train, cfg.seed)  # noqa: E731
    else:
        most = max([len(r.boxes) for s in index.splits.values() for r in s] + [1])
        make = lambda split, train: DetectionSamples(index.split(split), size, train, cfg.seed, most)  # noqa: E731
    return make("train", True), make("val", False), make("test", False)


def _task(cfg: TrainConfig, classes: list[str], size: int):
    if cfg.task == "classification":
        from training.classification import ClassificationTask

        return ClassificationTask(classes)
    from training.detection import DetectionTask

    return DetectionTask(classes, size)


def build_net(
    cfg: TrainConfig, spec: networks.NetworkSpec, classes: list[str], size: int, found: Optional[SourceNetwork]
):
    """Network with its starting weights: random, GluonCV pretrained (cache only) or a previous model
    (`found`, the resolved cfg.init_from)."""
    net = networks.build_network(
        spec, classes, pretrained=cfg.pretrained and cfg.task == "detection", cache=cfg.pretrained_cache
    )
    networks.initialize(net, size)
    info = {"init": "random"}
    if cfg.pretrained and cfg.task == "classification":
        source = finetune.named_arrays(networks.load_pretrained_classifier(spec, cfg.pretrained_cache))
        copied, skipped = finetune.transfer_weights(net, source, tuple(finetune.class_layers(net, cfg.task)))
        info = {"init": f"gluoncv:{spec.base}", "copied": copied, "reinitialised": len(skipped)}
    elif cfg.pretrained:
        info = {"init": f"gluoncv:{spec.base} (backbone)"}
    elif found is not None:
        weights = found.weights
        if found.task != cfg.task:
            if (found.task, cfg.task) != ("classification", "detection"):
                raise ConfigError(f"init_from: {cfg.init_from} is a {found.task} model, not {cfg.task}")
            # A classifier we trained seeds the SSD backbone (as ImageNet weights would):
            # the SSD holds the same base network under its own prefix.
            weights = {net.prefix + name: value for name, value in weights.items()}
        source_classes = found.classes
        # Classification outputs carry rows over by class name; SSD's predictors interleave
        # classes per anchor, so they start afresh whenever the class list changes.
        row_map = None
        if cfg.task == "classification" or (source_classes == classes and found.task == cfg.task):
            row_map = [source_classes.index(c) if c in source_classes else -1 for c in classes]
        copied, skipped = finetune.transfer_weights(net, weights, tuple(finetune.class_layers(net, cfg.task)), row_map)
        info = {
            "init": cfg.init_from,
            "source": found.origin,
            "copied": copied,
            "reinitialised": len(skipped),
            "source_classes": source_classes,
            "new_classes": [c for c in classes if c not in source_classes],
        }
    if cfg.freeze_backbone:
        info["frozen"] = finetune.freeze_backbone(net, cfg.task)
    return net, info


def train(
    cfg: TrainConfig,
    env: RunEnvironment,
    project_root: Path = Path("."),
    on_epoch: Optional[Callable[[dict], None]] = None,
    metric_lines: bool = True,
) -> RunResult:
    """Train `cfg` end to end; returns the exported model folder, the final metrics and the MLflow run.

    `on_epoch` is called after every epoch with that epoch's row (epoch, lr, train_loss,
    train_images_per_s and the validation metrics), as written to curves.csv: a notebook's live plot
    (training.notebook.LiveCurves). `metric_lines=False` leaves out the `[metric] name=value` lines
    printed for SageMaker's metric_definitions (a notebook plots them instead).
    Errors: ConfigError, DatasetError (training.errors).
    """
    spec = networks.parse_network(cfg.network, cfg.task)
    size = spec.input_size or cfg.input_size
    index, check = prepare_data(cfg)
    classes = index.classes
    train_set, val_set, test_set = _datasets(cfg, index, size)
    if len(train_set) < cfg.batch_size:
        raise DatasetError(
            f"{cfg.data}: train split has {len(train_set)} samples, fewer than batch_size={cfg.batch_size}"
        )
    seed_everything(cfg.seed)
    with tempfile.TemporaryDirectory(prefix="lensops-train-") as tmp:
        workdir = Path(tmp)  # init_from downloads/extractions and default plots; gone afterwards
        # A model folder, SageMaker model.tar.gz, package (folder or .tar.gz), runs:/ or models:/ reference,
        # resolved once: its identity (an alias's version now) goes into the checkpoint fingerprint too.
        found = (
            resolve_init_from(cfg.init_from, workdir, project_root) if cfg.init_from and not cfg.pretrained else None
        )
        net, init_info = build_net(cfg, spec, classes, size, found)
        net.hybridize(static_alloc=True, static_shape=True)
        task = _task(cfg, classes, size)

        shard = (env.rank, len(env.hosts)) if env.is_distributed else (0, 1)
        train_loader, train_sampler = make_loader(
            train_set, cfg.batch_size, True, cfg.seed, cfg.num_workers, True, shard
        )
        val_loader, _ = make_loader(val_set, cfg.batch_size, False, cfg.seed, cfg.num_workers, False)
        kvstore = "dist_sync" if env.is_distributed else "device"
        opt_params = {"learning_rate": cfg.lr, "wd": cfg.wd}
        if env.is_distributed:
            # dist_sync sums the workers' gradients; each is already the mean over its own batch
            opt_params["rescale_grad"] = 1.0 / len(env.hosts)
        if cfg.optimizer != "adam":
            opt_params["momentum"] = cfg.momentum
        steps_per_epoch = len(train_sampler)
        total_steps = steps_per_epoch * cfg.epochs
        warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))
        store = CheckpointStore(cfg.checkpoints)
        data_digest = data_hash(cfg.data)
        fingerprint = config_fingerprint(cfg, data_digest, found.identity if found is not None else None)
        latest = store.latest() if cfg.resume else None
        if latest is not None and store.fingerprint(latest) != fingerprint:
            print(f"checkpoints in {store.folder} belong to a different configuration: starting afresh", flush=True)
            store.clear()
            latest = None
        if env.is_distributed:
            # dist_sync runs the optimizer on the parameter servers: the schedule travels with it
            from training.dist_schedule import StepSchedule

            first = (latest + 1) * steps_per_epoch if latest is not None else 0
            opt_params["lr_scheduler"] = StepSchedule(total_steps, cfg.lr, warmup_steps, cfg.lr_schedule, first)
        trainer = gluon.Trainer(net.collect_params(), cfg.optimizer, opt_params, kvstore=kvstore)
        patience = cfg.early_stopping_patience
        if env.is_distributed and patience:
            # every host must run the same number of dist_sync steps; hosts' validation figures can differ
            # (BatchNorm statistics are per host), so a per-host stopping decision could leave one waiting
            print(
                f"early_stopping_patience={patience} is ignored in a multi-host run: every host runs all "
                f"{cfg.epochs} epochs",
                flush=True,
            )
            patience = 0
        stopper = EarlyStopping(patience)
        # A multi-host run checkpoints weights and loop state from the first host only (SageMaker gives
        # every host the same checkpoint folder back on a restart); the optimizer state lives on the
        # parameter servers (MXNet cannot save it from a worker), so a resumed run restarts its momentum.
        states_from = None if env.is_distributed else trainer
        is_chief = env.rank == 0
        history: list[dict] = []
        start_epoch = 0
        if latest is not None:
            state = store.load(latest, net, states_from)
            stopper = EarlyStopping.from_dict(state["early_stopping"])
            history = state["history"]
            start_epoch = latest + 1
            print(f"resuming from checkpoint epoch {latest} in {store.folder}", flush=True)

        tracker = Tracker(
            enabled=_tracking_enabled(cfg, env) and is_chief,
            uri=tracking_uri(project_root),
            experiment=cfg.experiment,
            artifact_root=project_root / "mlartifacts",
        )
        lineage = {
            "data_hash": data_digest,
            "data_path": str(cfg.data),
            "git_commit": git_commit(project_root),
            "init": init_info,
        }
        tracker.start(
            f"{cfg.model_name}-train",
            json.loads(cfg.model_dump_json()),
            {
                "task": cfg.task,
                "network": cfg.network,
                "data_hash": lineage["data_hash"],
                "git_commit": lineage["git_commit"],
                "init": init_info["init"],
                "resumed_from_epoch": latest,
            },
        )
        ok = False
        try:
            epoch = start_epoch - 1
            for epoch in tqdm(
                range(start_epoch, cfg.epochs),
                desc=f"{cfg.model_name} epochs",
                initial=start_epoch,
                total=cfg.epochs,
                disable=not cfg.progress,
                file=sys.stderr,
            ):
                if stopper.should_stop:
                    break
                train_sampler.set_epoch(epoch)
                losses = []
                bar = tqdm(train_loader, desc=f"epoch {epoch}", leave=False, disable=not cfg.progress, file=sys.stderr)
                started = time.perf_counter()
                for i, batch in enumerate(bar):
                    lr = lr_at(epoch * steps_per_epoch + i, total_steps, cfg.lr, warmup_steps, cfg.lr_schedule)
                    if not env.is_distributed:  # multi-host: StepSchedule computes it on the servers
                        trainer.set_learning_rate(lr)
                    losses.append(task.train_batch(net, batch, trainer)["loss"])
                    bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
                train_loss = float(np.mean(losses))
                # this host's training throughput (its shard in a multi-host run), data loading included
                images_per_s = len(losses) * cfg.batch_size / max(time.perf_counter() - started, 1e-9)
                if not np.isfinite(train_loss):
                    raise ConfigError(
                        f"training diverged at epoch {epoch} (loss {train_loss}); lower lr (now {cfg.lr})"
                    )
                metrics, _ = task.evaluate(net, val_loader, "val")
                row = {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "lr": lr,
                    "train_images_per_s": images_per_s,
                    **metrics,
                }
                history.append(row)
                if on_epoch is not None:
                    on_epoch(row)
                for name in ("train_loss", "train_images_per_s", task.primary_metric, "val_loss"):
                    if name in row and metric_lines:
                        emit_metric(name, row[name], epoch)
                tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
                improved = stopper.update(epoch, metrics[task.primary_metric])
                if is_chief or not env.is_distributed:
                    store.save(
                        epoch,
                        net,
                        states_from,
                        {"early_stopping": stopper.to_dict(), "history": history, "fingerprint": fingerprint},
                        improved,
                    )
            epochs_run = len(history)
            if stopper.should_stop:
                print(
                    f"early stopping: no improvement of {task.primary_metric} for {stopper.patience} epochs "
                    f"(best {stopper.best:.4f} at epoch {stopper.best_epoch})",
                    flush=True,
                )
            if env.is_distributed:
                # the same digest on every host shows the workers ended in sync. The model is the last
                # epoch's: MXNet cannot load other weights into parameters a dist_sync kvstore holds.
                print(f"trainable parameters digest: {parameters_digest(net)} host={env.current_host}", flush=True)
            else:
                store.load_best(net)

            final = {"best_epoch": stopper.best_epoch, f"best_{task.primary_metric}": stopper.best}
            if env.is_distributed and history:  # the model kept is the last epoch's (above)
                final = {
                    "best_epoch": history[-1]["epoch"],
                    f"best_{task.primary_metric}": history[-1][task.primary_metric],
                }
            test_loader, _ = make_loader(test_set, cfg.batch_size, False, cfg.seed, cfg.num_workers, False)
            plots_dir = cfg.plots_dir or workdir / "plots"
            write_curves(history, plots_dir, task.primary_metric)
            if len(test_set):
                test_metrics, extra = task.evaluate(net, test_loader, "test")
                final.update(test_metrics)
                if "confusion" in extra:
                    write_confusion(extra["confusion"], classes, plots_dir)
                if "pr_curves" in extra:
                    write_pr_curves(extra["pr_curves"], plots_dir)
            for name, value in final.items():
                if metric_lines:
                    emit_metric(name, value)
            tracker.log_metrics(final)
            final["data_check"] = check
            model_dir = None
            if is_chief:
                model_dir = export_model(
                    net, cfg, classes, size, final, {**lineage, "mlflow_run_id": tracker.run_id}, cfg.model_dir
                )
                tracker.log_artifacts(model_dir, "model")
                tracker.log_artifacts(plots_dir, "plots")
                if cfg.metrics_file:
                    _write_json(cfg.metrics_file, {k: v for k, v in final.items() if k != "data_check"})
            ok = True
            return RunResult(model_dir, final, epochs_run, tracker.run_id)
        finally:
            tracker.end(ok)


def parameters_digest(net) -> str:
    """SHA-256 (first 16 hex digits) over the trainable parameters, by name; BatchNorm statistics are
    per host in a multi-host run and so left out."""
    digest = hashlib.sha256()
    for name, param in sorted(net.collect_params().items()):
        if param.grad_req != "null":
            digest.update(name.encode())
            digest.update(param.data().asnumpy().tobytes())
    return digest.hexdigest()[:16]


def config_fingerprint(cfg: TrainConfig, data_digest: str, init_identity: Optional[str]) -> str:
    """Hash of everything that shapes the weights (config, data, starting model); a checkpoint
    resumes only the same run, never one whose data or init_from model has changed since.
    `init_identity` is the resolved init_from's SourceNetwork.identity (an alias: the version it points at now)."""
    ignore = {
        "progress",
        "resume",
        "tracking",
        "experiment",
        "metrics_file",
        "plots_dir",
        "model_dir",
        "checkpoint_dir",
        "num_workers",
    }
    config = {k: v for k, v in json.loads(cfg.model_dump_json()).items() if k not in ignore}
    blob = json.dumps({"config": config, "data": data_digest, "init": init_identity}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _tracking_enabled(cfg: TrainConfig, env: RunEnvironment) -> bool:
    if cfg.tracking == "none":
        return False
    if cfg.tracking == "auto" and env.in_sagemaker and not os.environ.get("MLFLOW_TRACKING_URI"):
        return False
    return True


def _write_json(path: Path, data: dict) -> None:
    write_json(path, data, sort_keys=True)
