"""The run's output: a plain-text table per section on stdout, bench.json and bench.png."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from common.files import write_json as write_json_atomically


def table(headers: list[str], rows: Iterable[list]) -> str:
    rows = [[("-" if v is None else str(v)) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _variants(section: dict) -> str:
    peaks = section["peaks"]
    head = (
        f"measured peaks at {peaks['threads']} threads: fp32 {peaks['fp32']['gflops']} GFLOP/s, "
        f"int8 {peaks['int8']['gflops']} GOP/s, bf16 {peaks['bf16']['gflops']} GFLOP/s"
        f"{'' if peaks['bf16']['native'] else ' (emulated)'}"
    )
    for precision in ("fp32", "int8", "bf16"):
        if not peaks[precision].get("peak", True):
            head += (
                f"\n  {precision}: not a peak ({peaks[precision]['how']} does not reach this CPU's units: "
                f"{peaks[precision]['beaten_by']} beat it); its 'of peak' figures are over 100%"
            )
    rows = [
        [
            r["model"],
            r["batch"],
            r["variant"],
            f"{r['median_ms']:.3f}",
            r["images_per_s"],
            f"{r['vs_mxnet']:.2f}x",
            r["gflops"],
            f"{r['peak_fraction']:.0%}",
            r["gate"][:40],
        ]
        for r in section["rows"]
    ]
    return (
        head
        + "\n"
        + table(
            ["model", "batch", "variant", "median ms", "img/s", "vs MXNet", "GFLOP/s", "of peak", "parity gate"], rows
        )
    )


def _end_to_end(section: dict) -> str:
    rows = []
    for kind in ("file", "frames"):
        f = section[kind]
        rows.append(
            [
                f["label"],
                f["fps"],
                f["slowest_stage"],
                f["slowest_fps"],
                f"{f['efficiency']:.2f}",
                f["worker_bound_fps"],
                f["cpu_bound_fps"],
                f["in_runner"]["total_ms"],
                f["age_p50_ms"],
                f["age_p99_ms"],
                f["frames"],
            ]
        )
    stages = table(
        ["stage alone", "median ms/frame", "frames/s", "CPU-ms/frame"],
        [[name, s["median_ms"], s["fps"], s["cpu_ms"]] for name, s in section["stages"].items()],
    )
    return (
        stages
        + "\n"
        + table(
            [
                "runner on",
                "frames/s",
                "slowest stage",
                "its frames/s",
                "efficiency",
                "worker bound",
                "CPU bound",
                "predict ms in runner",
                "age p50 ms",
                "age p99 ms",
                "frames",
            ],
            rows,
        )
    )


def _publisher(section: dict) -> str:
    rows = [
        [mode, f["messages"], f["messages_per_s"], f["enqueue_per_s"], f["enqueue_p50_ms"], f["enqueue_p99_ms"]]
        for mode, f in ((m, section[m]) for m in ("sustained", "drain_only"))
    ]
    return table(["mode", "messages", "messages/s", "enqueue/s", "enqueue p50 ms", "enqueue p99 ms"], rows)


def _training(section: dict) -> str:
    rates = section["images_per_s"]
    rows = [[mode, rate, section["cpu_ms_per_image"][mode]] for mode, rate in rates.items()]
    return (
        table(["mode", "images/s", "CPU-ms/image"], rows)
        + f"\ndata pipeline / in-memory {section['pipeline_vs_in_memory']:.2f}, "
        f"hybridized / imperative {section['hybridized_vs_imperative']:.2f}x, one sample "
        f"{section['one_sample_ms']} ms in one thread; data: {section['data']}"
    )


def _hot_swap(section: dict) -> str:
    rows = [["steady state", section["baseline_gap_ms"], "-", "-"]]
    rows += [[f"swap to {s['to']}", s["gap_ms"], s["swap_s"], s["drops"]] for s in section["swaps"]]
    return (
        table(["window", "longest gap ms", "notice -> activated s", "frames dropped"], rows)
        + f"\nframe interval {section['interval_ms']} ms; stall of the worst swap "
        f"{section['stall_intervals']} frame intervals"
    )


def _fleet(section: dict) -> str:
    rows = [
        [
            section["devices"],
            section["processes"],
            section["boot_s"],
            section["first_s"],
            section["median_s"],
            section["all_s"],
            f"{section['resolve_per_device_max']} / {section['download_per_device_max']}",
            section["rss_mb_per_device"],
        ]
    ]
    return (
        table(
            [
                "devices",
                "processes",
                "boot s",
                "first switched s",
                "median s",
                "all switched s",
                "registry calls/device (resolve / download, max)",
                "RSS MB/device",
            ],
            rows,
        )
        + f"\n{section['switched']} of {section['devices']} devices switched"
    )


def _counts(section: dict) -> str:
    rows = [
        [
            s["scene"],
            s["seed"],
            s["frames"],
            s["published"],
            s["matching"],
            f"{s['share']:.1%}",
            f"{s['strict_share']:.1%}",
            ", ".join(f"{n} {k}" for k, n in s["mismatch_kinds"].items() if n) or "-",
        ]
        for s in section["scenes"]
    ]
    summary, goals = section["summary"], section["goals"]
    unseen = "" if summary["share_unseen"] is None else f"; unseen scenes only {summary['share_unseen']:.1%}"
    verdict = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    return (
        table(["scene", "seed", "frames", "published", "matching (VOC)", "share", "strict share", "mismatches"], rows)
        + f"\nall frames: {summary['matching']} of {summary['frames']} match, {summary['share_all']:.1%} "
        f"(strict {summary['strict_all']:.1%}){unseen}; worst scene: seed {summary['worst']['seed']} "
        f"({summary['worst']['scene']}) {summary['worst']['share']:.1%}"
        + f"\ngoals: >= {goals['share_all']:.0%} of all frames {verdict(summary['share_all'] >= goals['share_all'])}, "
        f">= {goals['share_worst']:.0%} in the worst scene "
        f"{verdict(summary['worst']['share'] >= goals['share_worst'])}"
    )


def _targets(rows: list[dict]) -> str:
    body = [
        [
            r["target"],
            r["measured"],
            r["goal"],
            r["unit"],
            r["status"].upper() if r["status"] == "missed" else r["status"],
        ]
        for r in rows
    ]
    text = table(["target", "measured", "goal", "unit", "status"], body)
    limits = [f"  - {r['target']}: {r['limit']}" for r in rows if r["status"] == "missed" and r["limit"]]
    return text + ("\nwhat limits the misses:\n" + "\n".join(limits) if limits else "")


def _cameras(section: dict) -> str:
    parts = []
    for name, found in section["resolutions"].items():
        stages = found["stages"]
        parts.append(
            f"{name}@{section['fps']}: alone decode {stages['decode']['cpu_ms']} + predict "
            f"{stages['predict']['cpu_ms']} CPU-ms/frame -> CPU bound {found['bound']} cameras on "
            f"{found['cores']} cores; kept {found['kept']} in real time with no frame lost "
            f"({found['ratio']:.2f} x bound)"
            + ("" if found["failed"] is None or found["failed"] - found["kept"] <= 1 else f", {found['failed']} not")
        )
        trials = found["trials"]
        rows = [
            [
                t["n"],
                t["batch"],
                t["frames"],
                t["drops"],
                t["published"],
                t["ready_s"],
                f"{t['wall_s']} / {t['video_s']}",
                t["age_p50_ms"],
                t["age_p99_ms"],
                t["cpu_cores"],
                t["cpu_ms_per_frame"],
                t["mean_batch"],
                "-" if t["others_cpu"] is None else f"{t['others_cpu']:.0%}",
                t["why"],
            ]
            for t in trials
        ]
        parts.append(
            table(
                [
                    "cameras",
                    "batch",
                    "frames",
                    "drops",
                    "published",
                    "ready s",
                    "wall / video s",
                    "age p50 ms",
                    "age p99 ms",
                    "CPU cores",
                    "CPU-ms/frame",
                    "mean batch",
                    "others' CPU",
                    "verdict",
                ],
                rows,
            )
        )
        at, off = found["at_kept"], found["unbatched"]
        if at is not None and off is not None and at["cpu_ms_per_frame"] and off["cpu_ms_per_frame"]:
            parts.append(
                f"batching at {at['n']} cameras: {at['cpu_ms_per_frame']} vs {off['cpu_ms_per_frame']} CPU-ms/frame "
                f"without ({at['cpu_ms_per_frame'] / off['cpu_ms_per_frame']:.2f}x), age p50 {at['age_p50_ms']} vs "
                f"{off['age_p50_ms']} ms, p99 {at['age_p99_ms']} vs {off['age_p99_ms']} ms; without batching "
                f"{'kept' if off['kept'] else 'not kept: ' + off['why']}"
            )
    return "\n".join(parts)


FORMATTERS = {
    "variants": _variants,
    "end_to_end": _end_to_end,
    "publisher": _publisher,
    "training": _training,
    "hot_swap": _hot_swap,
    "cameras": _cameras,
    "counts": _counts,
    "fleet": _fleet,
}


def render(result: dict) -> str:
    machine = result["machine"]
    out = [
        f"CPU: {machine['cpu_model']}, {machine['cores']} cores; flags: {', '.join(machine['flags']) or 'none'} "
        f"(absent: {', '.join(machine['absent_flags']) or 'none'}); threads used: {machine['threads']}",
        f"mode: {'quick' if result['quick'] else 'full'}; elapsed {result['elapsed_s']} s",
    ]
    if result.get("shared"):
        out.append(f"NOTE: {result['shared']}")
    for name, section in result["sections"].items():
        out.append(f"\n== {section.get('title', name)} ==")
        if "error" in section:
            out.append("FAILED: " + " | ".join(section["error"].strip().splitlines()[-4:]))
        elif "skipped" in section:
            out.append(f"skipped: {section['skipped']}")
        else:
            out.append(FORMATTERS[name](section))
            out.extend(f"note: {n}" for n in section.get("notes", []))
    out.append("\n== Targets (issue 5; counts: issue 10) ==")
    out.append(_targets(result["targets"]))
    return "\n".join(out)


def write_json(result: dict, out: Path) -> Path:
    return write_json_atomically(out / "bench.json", result, default=str)


def _grouped_bars(ax, rows: list[dict], key: str, title: str) -> None:
    """One group per (model, batch), one bar per variant (the reference shown where it means something)."""
    groups = list(dict.fromkeys((r["model"], r["batch"]) for r in rows))
    names = list(dict.fromkeys(r["variant"] for r in rows if key != "vs_mxnet" or r["variant"] != "mxnet-native-fp32"))
    width = 0.8 / len(names)
    colours = {name: f"C{i}" for i, name in enumerate(dict.fromkeys(r["variant"] for r in rows))}
    for i, name in enumerate(names):
        values = [
            next((r[key] for r in rows if (r["model"], r["batch"]) == g and r["variant"] == name), 0) for g in groups
        ]
        ax.bar([g + i * width for g in range(len(groups))], values, width, label=name, color=colours[name])
    labels = [f"{m.replace('shapes-', '')}\nbatch {b}" for m, b in groups]
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], labels, fontsize=7)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_title(title)
    ax.legend(fontsize=7)


def _goal_ratio(target: dict) -> float:
    """measured / goal for 'at least' targets, goal / measured for 'at most' ones: >= 1 means met."""
    goal = float(str(target["goal"]).split()[-1])
    if str(target["goal"]).startswith("<="):
        return goal / target["measured"] if target["measured"] > 0 else 2.0
    return target["measured"] / goal


def write_plot(result: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    sections = result["sections"]
    variants = sections.get("variants", {})
    if "rows" in variants:
        _grouped_bars(axes[0, 0], variants["rows"], "vs_mxnet", "speed-up vs MXNet-native FP32 (per image, x)")
        _grouped_bars(axes[0, 1], variants["rows"], "peak_fraction", "achieved / measured peak of its precision")
    e2e = sections.get("end_to_end", {})
    if "stages" in e2e:
        labels = [f"{n} alone" for n in e2e["stages"]] + [e2e[k]["label"] for k in ("file", "frames")]
        values = [s["fps"] for s in e2e["stages"].values()] + [e2e[k]["fps"] for k in ("file", "frames")]
        axes[1, 0].barh(labels, values, color=["C2"] * len(e2e["stages"]) + ["C3", "C3"])
        axes[1, 0].set_title("runner: frames/s end to end vs each stage alone")
    measured = [t for t in result["targets"] if t["measured"] is not None]
    if measured:
        ratios = [_goal_ratio(t) for t in measured]
        axes[1, 1].barh(
            [t["target"][:48] for t in measured],
            ratios,
            color=["C2" if t["status"] == "met" else "C3" for t in measured],
        )
        axes[1, 1].axvline(1.0, color="black", lw=0.8)
        axes[1, 1].set_title("targets: measured / goal (>= 1 met)")
        axes[1, 1].tick_params(axis="y", labelsize=7)
    machine = result["machine"]
    fig.suptitle(
        f"LensOps benchmarks: {machine['cpu_model']}, {machine['threads']} threads, flags {', '.join(machine['flags'])}"
    )
    fig.tight_layout()
    path = out / "bench.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
