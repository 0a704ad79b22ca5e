"""Human-readable tables of the optimize report (CLI output and the README's variant table)."""

from __future__ import annotations


def variant_table(report: dict) -> str:
    key = "accuracy" if report["task"] == "classification" else "map"
    ref = report["reference"]
    cpu = report["cpu"]
    lines = [
        f"{report['model']} ({report['task']}), CPU {cpu['model']}, flags {' '.join(cpu['flags']) or '-'}, "
        f"{cpu['threads']} threads, batch 1",
        "",
        f"| variant | val {key} | parity | median latency (ms) | speed-up vs MXNet-native FP32 | in package |",
        "|---|---|---|---|---|---|",
        f"| MXNet-native FP32 (reference) | {ref['metrics'][key]:.4f} | - "
        f"| {ref['latency']['median_ms']:.3f} | 1.00x | - |",
    ]
    for vid, row in report["variants"].items():
        parity = row.get("parity", {})
        figure = (
            f"agreement {parity['top1_agreement']:.4f}, drop {parity['accuracy_drop_pt']:+.2f} pt"
            if "top1_agreement" in parity
            else f"mAP drop {parity['map_drop_pt']:+.2f} pt"
            if parity
            else "-"
        )
        latency = row.get("latency", {}).get("median_ms")
        speed = f"{row['speedup_vs_mxnet']:.2f}x" if "speedup_vs_mxnet" in row else "-"
        status = "yes" if row["passed"] else f"no: {row['reason']}"
        note = f" ({row['note']})" if row.get("note") else ""
        lines.append(
            f"| {vid}{note} | {parity.get(key, float('nan')):.4f} | {figure} | "
            f"{latency if latency is None else f'{latency:.3f}'} | {speed} | {status} |"
        )
    return "\n".join(lines)


def promotion_line(path) -> str:
    import json

    report = json.loads(path.read_text())
    verdict = (
        "promoted"
        if report["action"] == "moved"
        else "kept the champion"
        if not report["promote"]
        else report["action"]
    )
    return (
        f"{report['model']}: {verdict}; `{report['alias']}` -> version {report['production_version']} "
        f"({report['metric']} {report['challenger']['metric']:.4f} on {report['split']})"
    )


def main(root: str = ".") -> int:
    """Print the variant table of every optimized model and the promotion outcome (make demo ends with this)."""
    import json
    from pathlib import Path

    for path in sorted(Path(root).glob("reports/optimize/*/variants.json")):
        print(variant_table(json.loads(path.read_text())) + "\n")
    for path in sorted(Path(root).glob("reports/promote/*/promotion.json")):
        print(promotion_line(path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
