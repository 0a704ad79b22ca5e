"""`lensops evaluate`: the trained MXNet model on the held-out split, scored through the device codec.

Writes <out>/metrics.json (test_accuracy or test_map + per-class AP) and a plot file:
plots/confusion.csv (actual, predicted) for classifiers, plots/ap.csv (class, ap) for detectors.
"""

from __future__ import annotations

from pathlib import Path

from common.errors import UserError
from common.files import write_json, write_text
from edge.messages import Prediction
from pipelines import evaluate
from pipelines.optimize.export import inference_block
from pipelines.optimize.stage import _reference_run, specs


def predict_split(
    model_dir: Path, data: Path, split_name: str = "test"
) -> tuple[evaluate.Split, list[list[Prediction]]]:
    """The trained MXNet model's predictions on one split of `data`, decoded by the device codec: per
    image a list of edge.messages.Prediction (label, score, box) (boxes normalised [x0, y0, x1, y1]; detections down to
    evaluate.EVAL_SCORE_THRESHOLD). Errors: FileNotFoundError without model.json, ValueError when the
    split is empty or its classes differ from the model's."""
    model_json = Path(model_dir) / "model.json"
    if not model_json.is_file():
        raise UserError(f"{model_json}: missing (is {model_dir} a trained model folder?)")
    block, meta = inference_block(model_dir)
    input_spec, output_spec = specs(meta, 0.5)
    split = evaluate.load_split(data, meta["task"], split_name)
    if split.classes != meta["classes"]:
        raise UserError(f"{data}: classes {split.classes} differ from the model's {meta['classes']}")
    return split, evaluate.predict(_reference_run(block), split, input_spec, output_spec)


def evaluate_model(model_dir: Path, data: Path, out: Path, split_name: str = "test") -> dict:
    split, predictions = predict_split(model_dir, data, split_name)
    scores = evaluate.score(split, predictions)
    metrics = {f"{split_name}_{k}": round(v, 6) for k, v in scores.items()}
    metrics[f"{split_name}_images"] = len(split.records)
    out = Path(out)
    if split.task == "classification":
        rows = ["actual,predicted"] + [
            f"{split.classes[r.label]},{p[0].label}" for r, p in zip(split.records, predictions)
        ]
        write_text(out / "plots" / "confusion.csv", "\n".join(rows) + "\n")
    else:
        rows = ["class,ap"] + [f"{c},{scores[f'ap_{c}']:.6f}" for c in split.classes]
        write_text(out / "plots" / "ap.csv", "\n".join(rows) + "\n")
    write_json(out / "metrics.json", metrics)
    return metrics
