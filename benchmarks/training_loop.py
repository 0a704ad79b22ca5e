"""Section 4: training throughput of the demo classifier's recipe (params.yaml `train_classifier`).

Same network, batch size, optimizer and worker count as `make demo`, each step the runner's own
(`ClassificationTask.train_batch`: forward, loss, backward, optimizer step, loss read back):
  data pipeline   batches from `training.loaders.make_loader` over the image files (decode,
                  augmentation, normalisation in worker threads), hybridized network
  in-memory       one batch from that loader fed again and again (no data work), hybridized
  imperative      the same in-memory batches through a non-hybridized copy of the network
  loader alone    the data pipeline's batches with no training step (what it can supply)
  one sample      decode + augment + normalise of one image in the main thread (ms)
Images/s over a fixed number of steps after warm-up; rounds alternate the modes; the best round counts.
"""

from __future__ import annotations

import itertools
import logging
import time
from pathlib import Path

from benchmarks.machine import Settings, process_cpu_s

log = logging.getLogger(__name__)

DEFAULTS = {
    "network": "mobilenet0.25",
    "input_size": 64,
    "batch_size": 64,
    "optimizer": "nag",
    "lr": 0.5,
    "momentum": 0.9,
    "wd": 0.0001,
    "num_workers": 2,
    "seed": 0,
}


def recipe(root: Path) -> dict:
    from training.config import load_section
    from training.errors import ConfigError

    try:
        section = load_section(root / "params.yaml", "train_classifier")
    except ConfigError:
        section = {}
    return {key: section.get(key, value) for key, value in DEFAULTS.items()}


def data_folder(settings: Settings, size: int) -> tuple[Path, str]:
    prepared = settings.root / "data" / "prepared" / "classification"
    if (prepared / "labels.txt").is_file():
        return prepared, "data/prepared/classification"
    from training.datasets.synth import synth_classification

    out = settings.work / "classification-data"
    if not out.is_dir():
        synth_classification(out, n=300, seed=1, size=size)
    return out, "300 synthetic images made here (no data/prepared/classification: run `make demo`)"


def _network(spec, classes, size, hybridize: bool):
    from training import networks

    net = networks.build_network(spec, classes)
    networks.initialize(net, size)
    if hybridize:
        net.hybridize(static_alloc=True, static_shape=True)
    return net


def _images_per_s(step, batches, steps: int, warmup: int, batch_size: int) -> tuple[float, float]:
    """(images/s, CPU-ms per image over all threads of this process)."""
    for _ in range(warmup):
        step(next(batches))
    start, cpu = time.perf_counter(), process_cpu_s()
    for _ in range(steps):
        step(next(batches))
    images = steps * batch_size
    return images / (time.perf_counter() - start), (process_cpu_s() - cpu) / images * 1000


def _epochs(loader, sampler):
    for epoch in itertools.count():
        sampler.set_epoch(epoch)
        yield from loader


def run(settings: Settings) -> dict:
    from mxnet import gluon

    from training import networks
    from training.classification import ClassificationTask
    from training.datasets.formats import load_dataset
    from training.loaders import ClassificationSamples, make_loader

    cfg = recipe(settings.root)
    size, batch_size = cfg["input_size"], cfg["batch_size"]
    folder, data_note = data_folder(settings, size)
    index = load_dataset(folder, "classification")
    spec = networks.parse_network(cfg["network"], "classification")
    task = ClassificationTask(index.classes)
    dataset = ClassificationSamples(index.split("train"), size, True, cfg["seed"])
    loader, sampler = make_loader(dataset, batch_size, True, cfg["seed"], cfg["num_workers"], True)
    pipeline = _epochs(loader, sampler)
    fixed = next(pipeline)
    in_memory = itertools.repeat(fixed)

    def stepper(hybridize: bool):
        net = _network(spec, index.classes, size, hybridize)
        opt = {"learning_rate": cfg["lr"] * 0.01, "wd": cfg["wd"]}  # small: many steps on one batch stay finite
        if cfg["optimizer"] != "adam":
            opt["momentum"] = cfg["momentum"]
        trainer = gluon.Trainer(net.collect_params(), cfg["optimizer"], opt)
        return lambda batch: task.train_batch(net, batch, trainer)

    hybrid, imperative = stepper(True), stepper(False)
    steps, warmup = settings.runs(25, 5), settings.runs(3, 2)
    measured: dict[str, list[tuple[float, float]]] = {
        "data_pipeline": [],
        "in_memory": [],
        "imperative": [],
        "loader_alone": [],
    }
    for _ in range(settings.runs(3, 1)):
        measured["in_memory"].append(_images_per_s(hybrid, in_memory, steps, warmup, batch_size))
        measured["data_pipeline"].append(_images_per_s(hybrid, pipeline, steps, warmup, batch_size))
        measured["imperative"].append(_images_per_s(imperative, in_memory, steps, warmup, batch_size))
        measured["loader_alone"].append(_images_per_s(lambda _batch: None, pipeline, steps, warmup, batch_size))
    best = {mode: max(values) for mode, values in measured.items()}
    rates = {mode: round(rate, 1) for mode, (rate, _) in best.items()}
    cpu = {mode: round(ms, 3) for mode, (_, ms) in best.items()}
    start = time.perf_counter()
    for i in range(batch_size):
        dataset[(i, 0)]
    sample_ms = (time.perf_counter() - start) / batch_size * 1000
    return {
        "title": f"Training: {cfg['network']} at {size} px, batch {batch_size}, {cfg['optimizer']}, "
        f"{cfg['num_workers']} loader workers (threads)",
        "images_per_s": rates,
        "pipeline_vs_in_memory": round(rates["data_pipeline"] / rates["in_memory"], 3),
        "hybridized_vs_imperative": round(rates["in_memory"] / rates["imperative"], 2),
        "cpu_ms_per_image": cpu,
        "one_sample_ms": round(sample_ms, 3),
        "loader_workers": cfg["num_workers"],
        "limit": limit(rates, cpu, settings.threads),
        "steps": steps,
        "data": data_note,
    }


def limit(rates: dict, cpu: dict, cores: int) -> str:
    bound = cores * 1000 / (cpu["loader_alone"] + cpu["in_memory"])
    return (
        f"the loader alone supplies {rates['loader_alone']} images/s and the training step alone takes "
        f"{rates['in_memory']}, but they share {cores} cores: the data work (JPEG decode, augmentation with float32 "
        f"colour jitter, normalisation) costs {cpu['loader_alone']:.2f} CPU-ms per image and the training step "
        f"{cpu['in_memory']:.2f}, so together at most ~{bound:.0f} images/s (measured {rates['data_pipeline']}); "
        "the loader uses threads, not processes (forking MXNet can deadlock: training/loaders.py), so its Python "
        "work also waits for the GIL"
    )
