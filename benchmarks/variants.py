"""Section 1: every runtime variant of each model against MXNet-native hybridized FP32, side by side.

Per model and batch size, the runners are measured in interleaved rounds (each round times every
runner once, after a short idle so one runtime's spinning threads do not tax the next); a runner's
latency is the median of its round medians (`pipelines.evaluate.latency`). Ratios are per image
against MXNet-native at the same batch. Achieved GFLOP/s = 2 x MACs (counted from the ONNX graph)
x images / median time, as a fraction of the measured peak of the variant's precision.
"""

from __future__ import annotations

import logging
import statistics
import time
from typing import Callable

import numpy as np

from benchmarks import peak
from benchmarks.machine import Settings
from benchmarks.models import ModelUnderTest, models_under_test
from edge.package.codec import preprocess
from edge.package.runtimes import cpu_features, open_variant
from pipelines.evaluate import latency

log = logging.getLogger(__name__)

REFERENCE = "mxnet-native-fp32"
SKIPPED = ("mxnet-fp32",)  # the exported symbol on the same MXNet engine as the reference: nothing to learn
IDLE_S = 0.05  # between runners: OpenMP/ORT worker threads stop spinning


def mxnet_native(block) -> Callable[[np.ndarray], list[np.ndarray]]:
    import mxnet as mx

    def run(batch: np.ndarray) -> list[np.ndarray]:
        out = block(mx.nd.array(batch))
        return [o.asnumpy() for o in (out if isinstance(out, (list, tuple)) else [out])]

    return run


def runners(model: ModelUnderTest, threads: int) -> dict[str, tuple[str, Callable]]:
    """variant id -> (precision, run); the reference first."""
    found = {REFERENCE: ("fp32", mxnet_native(model.block))}
    for variant in model.variants:
        if variant.id not in SKIPPED:
            session = open_variant(model.build_dir, variant, model.output_names, threads)
            found[variant.id] = (variant.precision, session.run)
    return found


def _runs_for(run: Callable, batch: np.ndarray, budget_s: float, most: int) -> int:
    start = time.perf_counter()
    run(batch)
    once = time.perf_counter() - start
    return int(max(2, min(most, budget_s / max(once, 1e-6))))


def measure_model(model: ModelUnderTest, batch_size: int, settings: Settings) -> list[dict]:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (model.size, model.size, 3), dtype=np.uint8) for _ in range(batch_size)]
    batch = preprocess(frames, model.input_spec())
    timed = runners(model, settings.threads)
    rounds, budget = settings.runs(7, 1), settings.runs(0.5, 0.25)
    runs = {vid: _runs_for(run, batch, budget, settings.runs(30, 8)) for vid, (_, run) in timed.items()}
    medians: dict[str, list[float]] = {vid: [] for vid in timed}
    for _ in range(rounds):
        for vid, (_, run) in timed.items():
            time.sleep(IDLE_S)
            medians[vid].append(latency(run, batch, warmup=1, runs=runs[vid])["median_ms"])
    ref_ms = statistics.median(medians[REFERENCE])
    rows = []
    for vid, (precision, _) in timed.items():
        ms = statistics.median(medians[vid])
        gflops = 2 * model.macs * batch_size / (ms / 1000) / 1e9
        rows.append(
            {
                "model": model.name,
                "batch": batch_size,
                "variant": vid,
                "precision": precision,
                "median_ms": round(ms, 3),
                "images_per_s": round(batch_size / ms * 1000, 1),
                "vs_mxnet": round(ref_ms / ms, 2),
                "gflops": round(gflops, 2),
                "runs": runs[vid] * rounds,
                "gate": model.gate.get(vid, "reference"),
            }
        )
    return rows


def _best_peaks(measured: list[dict]) -> dict:
    """Per precision, the best of the peak measurements taken through the section."""
    best = dict(measured[0])
    for key in ("fp32", "int8", "bf16"):
        best[key] = max((m[key] for m in measured), key=lambda p: p["gflops"])
    return best


def run(settings: Settings) -> dict:
    samples = [peak.measure(settings.threads, runs=settings.runs(5, 3))]
    models = models_under_test(settings)
    measured = []
    for model in models:
        for batch_size in (1, 8):
            log.info("variants: %s batch %d", model.name, batch_size)
            measured.append(measure_model(model, batch_size, settings))
        if not settings.quick:
            samples.append(peak.measure(settings.threads, runs=5))
    peaks = mark_non_peaks(_best_peaks(samples), [r for group in measured for r in group])
    rows = [
        dict(r, peak_fraction=round(r["gflops"] / peaks[r["precision"]]["gflops"], 3))
        for group in measured
        for r in group
    ]
    best = {}
    for model in models:
        ok = [
            r
            for r in rows
            if r["model"] == model.name
            and r["batch"] == 1
            and r["variant"] != REFERENCE
            and not r["gate"].startswith("failed")
        ]
        top = max(ok, key=lambda r: r["vs_mxnet"])
        best[model.name] = {"variant": top["variant"], "vs_mxnet": top["vs_mxnet"], "gate": top["gate"]}
    limits = {name: limit(rows, name, peaks) for name in best}
    notes = [
        f"{m.name}: {m.macs / 1e6:.1f} M MACs/image, weights {m.weights}; variants from {m.variants_from}"
        for m in models
    ]
    missing_bf16 = not ({"avx512_bf16", "amx_bf16"} & cpu_features())
    if missing_bf16:
        notes.append(
            "openvino-bf16: this CPU has no avx512_bf16/AMX, OpenVINO emulates bf16 (the device never "
            "picks this variant here: it declares avx512_bf16)"
        )
    return {
        "title": "Model variants (median latency; ratio per image vs MXNet-native FP32 at the same batch)",
        "peaks": peaks,
        "rows": rows,
        "best_batch1": best,
        "limits": limits,
        "notes": notes,
    }


def int8_units(features: set[str]) -> str:
    """The int8 matrix units this CPU's flags name (AMX, VNNI), or "no VNNI/AMX"."""
    units = [name for name, flags in (("AMX", {"amx_int8"}), ("VNNI", {"avx512_vnni", "avx_vnni"})) if flags & features]
    return " and ".join(units) if units else "no VNNI/AMX"


def mark_non_peaks(peaks: dict, rows: list[dict]) -> dict:
    """A probe that a variant of its precision beats did not reach this CPU's units for it (AMX, VNNI,
    bf16): it is marked `peak: False` with the variant that beat it, and the report says it is no peak."""
    marked = {k: (dict(v) if isinstance(v, dict) else v) for k, v in peaks.items()}
    for precision in ("fp32", "int8", "bf16"):
        faster = [r for r in rows if r.get("precision") == precision and r["gflops"] > marked[precision]["gflops"]]
        marked[precision]["peak"] = not faster
        if faster:
            top = max(faster, key=lambda r: r["gflops"])
            marked[precision]["beaten_by"] = (
                f"{top['variant']} ({top['model']}, batch {top['batch']}) at {top['gflops']}"
            )
    return marked


def limit(rows: list[dict], model: str, peaks: dict) -> str:
    """How far the reference and the best variant are from the measured peaks, and what that allows."""
    batch1 = [r for r in rows if r["model"] == model and r["batch"] == 1]
    ref = next(r for r in batch1 if r["variant"] == REFERENCE)
    best = max((r for r in batch1 if r["variant"] != REFERENCE), key=lambda r: r["vs_mxnet"])
    int8_gain = peaks["int8"]["gflops"] / peaks["fp32"]["gflops"]
    bound = max(1.0, int8_gain) / max(ref["peak_fraction"], 1e-9)
    probe = "peak" if peaks[best["precision"]].get("peak", True) else "probe (not a peak: a variant beat it)"
    return (
        f"MXNet-native runs at {ref['peak_fraction']:.0%} of the fp32 peak, {best['variant']} at "
        f"{best['peak_fraction']:.0%} of the {best['precision']} {probe}; the int8 probe here is {int8_gain:.1f}x "
        f"the fp32 one ({int8_units(cpu_features())}), so a variant at 100% of it would be at most "
        f"~{bound:.1f}x MXNet-native"
    )
