"""`lensops package build`: the optimize build folder -> a verified model package (DESIGN.md).

Only variants that passed their parity gate go in; the rest stay in the optimize report with
their reason. Every file is pinned by sha256 in manifest.json; with a key the manifest is
signed (Ed25519). The folder is packed into a reproducible .tar.gz and verified once more.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from edge.package import Latency, Manifest, Sample, pack, sha256_file, verify_dir
from edge.package.manifest import MANIFEST, InputSpec, OutputSpec, PackageError
from edge.package.signing import sign_manifest
from pipelines.optimize.variants import report_variant

EVALUATION_KEYS = ("accuracy", "map")


def _metrics(report: dict, evaluation: Optional[dict]) -> dict[str, float]:
    """Held-out test metrics (evaluate stage) + the validation reference, as flat floats."""
    out = {f"val_{k}": float(v) for k, v in report["reference"]["metrics"].items()}
    for key, value in (evaluation or {}).items():
        if isinstance(value, (int, float)):
            out[key] = float(value)
    return out


def _lineage(report: dict) -> dict:
    source = report.get("source_model", {})
    lineage = dict(source.get("lineage", {}))
    lineage["training_params"] = {
        k: v for k, v in source.get("params", {}).items() if k not in ("progress", "tracking")
    }
    lineage["cpu_measured_on"] = report["cpu"]
    return lineage


def build_package(
    build_dir: Path, out_dir: Path, evaluation: Optional[dict] = None, sign_key: Optional[Path] = None, before_swap=None
) -> Manifest:
    """Write the package folder `out_dir` (replaced if present) from an optimize build folder."""
    build_dir, out_dir = Path(build_dir), Path(out_dir)
    report_path = build_dir / "optimize.json"
    if not report_path.is_file():
        raise PackageError(f"{report_path}: missing (run `lensops optimize` first)")
    try:
        report = json.loads(report_path.read_text())
        report["variants"], report["reference"], report["input"]  # noqa: B018 (the keys this code reads)
    except (ValueError, KeyError, TypeError) as exc:
        raise PackageError(f"{report_path}: not an optimize report ({type(exc).__name__}: {exc})") from None
    passed = {vid: row for vid, row in report["variants"].items() if row["passed"]}
    if not passed:
        reasons = "; ".join(f"{vid}: {row['reason']}" for vid, row in report["variants"].items())
        raise PackageError(f"{report_path}: no variant passed its parity gate ({reasons})")
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        variants = []
        for vid, row in passed.items():
            for rel in row["files"]:
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(build_dir / rel, tmp / rel)
            variants.append(
                report_variant(
                    vid,
                    row,
                    {rel: sha256_file(tmp / rel) for rel in row["files"]},
                    parity={k: float(v) for k, v in row["parity"].items()},
                    latency=Latency(**{k: row["latency"][k] for k in Latency.model_fields}),
                )
            )
        samples, sample_files = [], {}
        (tmp / "samples").mkdir()
        for image in sorted((build_dir / "samples").glob("*.png")):
            expected = json.loads(image.with_suffix(".json").read_text())
            expected["variants"] = {vid: p for vid, p in expected["variants"].items() if vid in passed}
            img_rel, exp_rel = f"samples/{image.name}", f"samples/{image.stem}.json"
            shutil.copy2(image, tmp / img_rel)
            (tmp / exp_rel).write_text(json.dumps(expected, indent=1, sort_keys=True))
            samples.append(Sample(image=img_rel, expected=exp_rel))
            sample_files.update({img_rel: sha256_file(tmp / img_rel), exp_rel: sha256_file(tmp / exp_rel)})
        content = hashlib.sha256(
            json.dumps([sorted(v.files.items()) for v in variants] + [sorted(sample_files.items())]).encode()
        ).hexdigest()
        manifest = Manifest(
            name=report["model"],
            version=content[:12],
            task=report["task"],
            labels=tuple(report["labels"]),
            created=report.get("built_at") or datetime.now(timezone.utc).isoformat(timespec="seconds"),
            input=InputSpec(**report["input"]),
            output=OutputSpec(**report["output"]),
            variants=tuple(variants),
            samples=tuple(samples),
            sample_files=sample_files,
            metrics=_metrics(report, evaluation),
            lineage=_lineage(report),
        )
        (tmp / MANIFEST).write_text(manifest.to_json())
        if sign_key:
            sign_manifest(tmp, sign_key)
        verify_dir(tmp)
        if before_swap:
            before_swap(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def build_and_pack(
    build_dir: Path, out_dir: Path, archive: Path, evaluation: Optional[dict] = None, sign_key: Optional[Path] = None
) -> tuple[Manifest, str]:
    """Package folder + .tar.gz; returns the manifest and the archive's sha256. The archive is written
    (atomically) before the folder is swapped in, so folder and archive never disagree."""
    manifest = build_package(build_dir, out_dir, evaluation, sign_key, before_swap=lambda tmp: pack(tmp, archive))
    return manifest, sha256_file(archive)
