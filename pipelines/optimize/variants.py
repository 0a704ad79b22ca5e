"""Build the runtime variants of one trained model from its exported graph.

mxnet-fp32      the hybridized MXNet graph (the reference; runs only where mxnet is installed)
onnx-fp32       ONNX Runtime, all graph optimizations on at load
onnx-int8       ONNX Runtime, static QDQ quantization, per-channel weights, calibrated on training images
openvino-fp32   OpenVINO IR converted from the ONNX graph
openvino-bf16   the same IR compiled with a bf16 precision hint (native on avx512_bf16 / AMX CPUs)
openvino-int8   OpenVINO IR converted from the int8 QDQ graph (int8 kernels; VNNI/AMX make them fast)
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from common.errors import UserError
from edge.package.manifest import Variant
from edge.package.runtimes import RUNTIMES, import_openvino

VARIANTS = ("mxnet-fp32", "onnx-fp32", "onnx-int8", "openvino-fp32", "openvino-bf16", "openvino-int8")
RUNTIME = {r.variant_prefix: key for key, r in RUNTIMES.items()}  # a variant id's prefix -> its runtime's key
CPU_FEATURES = {"openvino-bf16": ("avx512_bf16",)}


@dataclass
class BuiltVariant:
    id: str
    entry: str  # relative to the build root
    files: list[str] = field(default_factory=list)

    @property
    def runtime(self) -> str:
        return RUNTIME[self.id.split("-")[0]]

    @property
    def precision(self) -> str:
        return self.id.split("-")[1]

    @property
    def cpu_features(self) -> tuple[str, ...]:
        return CPU_FEATURES.get(self.id, ())

    def row(self) -> dict:
        """Its row of the optimize report (optimize.json `variants`), before it is measured."""
        return {
            "runtime": self.runtime,
            "precision": self.precision,
            "entry": self.entry,
            "files": list(self.files),
            "cpu_features": list(self.cpu_features),
        }


def report_variant(vid: str, row: dict, files: Optional[dict[str, str]] = None, **more) -> Variant:
    """The manifest entry of variant `vid` from its row of the optimize report: `files` maps each file to
    its sha256 (default: the row's files, digests left empty until packaging); `more` sets other Variant
    fields (parity, latency)."""
    return Variant(
        id=vid,
        runtime=row["runtime"],
        precision=row["precision"],
        entry=row["entry"],
        files={f: "" for f in row["files"]} if files is None else files,
        cpu_features=tuple(row["cpu_features"]),
        **more,
    )


class CalibrationReader:
    """Feeds preprocessed training images to ONNX Runtime's calibrator one at a time."""

    def __init__(self, batch: np.ndarray, input_name: str = "data"):
        self._items = iter([{input_name: batch[i : i + 1]} for i in range(len(batch))])

    def get_next(self):
        return next(self._items, None)


def quantize_int8(onnx_fp32: Path, out: Path, calibration: np.ndarray) -> Path:
    """Static QDQ int8: per-channel symmetric int8 weights, uint8 activations, MinMax calibration.
    Only Conv/MatMul/Gemm are quantized: softmax and the box decoding stay in float."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = out.with_name("prepared.onnx")
    quant_pre_process(str(onnx_fp32), str(prepared), skip_symbolic_shape=True)
    quantize_static(
        str(prepared),
        str(out),
        CalibrationReader(calibration),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["Conv", "MatMul", "Gemm"],
        calibrate_method=CalibrationMethod.MinMax,
    )
    prepared.unlink()
    return out


def to_openvino(onnx_path: Path, out_xml: Path) -> Path:
    ov = import_openvino()
    model = ov.convert_model(str(onnx_path))
    ov.save_model(model, str(out_xml), compress_to_fp16=False)
    return out_xml


def build_variants(
    block, meta: dict, root: Path, calibration: np.ndarray, wanted: tuple[str, ...] = VARIANTS
) -> list[BuiltVariant]:
    """Write each wanted variant under root/variants/<id>/; returns what was built (paths relative to root)."""
    from pipelines.optimize.export import export_mxnet, export_onnx

    unknown = set(wanted) - set(VARIANTS)
    if unknown:
        raise UserError(f"unknown variant(s) {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    root = Path(root)
    base = root / "variants"
    size = meta["input"]["size"][0]
    built: dict[str, BuiltVariant] = {}

    def rel(path: Path) -> str:
        return path.relative_to(root).as_posix()

    mx_dir = base / "mxnet-fp32"
    mx_dir.mkdir(parents=True, exist_ok=True)
    symbol, params = export_mxnet(block, mx_dir / "model")
    built["mxnet-fp32"] = BuiltVariant("mxnet-fp32", rel(symbol), [rel(symbol), rel(params)])

    fp32 = base / "onnx-fp32" / "model.onnx"
    fp32.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(symbol, params, meta["task"], size, fp32)
    built["onnx-fp32"] = BuiltVariant("onnx-fp32", rel(fp32), [rel(fp32)])

    if {"onnx-int8", "openvino-int8"} & set(wanted):
        int8 = base / "onnx-int8" / "model.onnx"
        int8.parent.mkdir(parents=True, exist_ok=True)
        quantize_int8(fp32, int8, calibration)
        built["onnx-int8"] = BuiltVariant("onnx-int8", rel(int8), [rel(int8)])
    for vid, source in (
        ("openvino-fp32", fp32),
        ("openvino-bf16", fp32),
        ("openvino-int8", base / "onnx-int8" / "model.onnx"),
    ):
        if vid in wanted:
            xml = to_openvino(source, base / vid / "model.xml")
            built[vid] = BuiltVariant(vid, rel(xml), [rel(xml), rel(xml.with_suffix(".bin"))])
    for vid in set(built) - set(wanted):
        shutil.rmtree(base / vid, ignore_errors=True)
        del built[vid]
    return [built[v] for v in VARIANTS if v in built]
