"""The files of a capture folder: atomic writes, VOC annotations, and the captures found on disk."""

from __future__ import annotations

import json
import logging
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from edge.messages import Prediction

log = logging.getLogger(__name__)

CAPTURE_ID = re.compile(r"^\d{8}T\d{12}Z-[A-Za-z0-9_.-]+-\d{6}$")


def voc_xml(capture_id: str, width: int, height: int, predictions: list[Prediction]) -> bytes:
    """A Pascal VOC annotation of the predicted boxes (normalized -> 1-based inclusive pixels, with the score).

    Boxes narrower or lower than one pixel are left out (the data check calls them degenerate).
    """
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = f"{capture_id}.jpg"
    ET.SubElement(ET.SubElement(root, "source"), "database").text = "LensOps capture"
    size = ET.SubElement(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for p in predictions:
        if p.box is None:
            continue
        x0, y0, x1, y1 = p.box  # in [0, 1]: a Prediction checks it
        left, top, right, bottom = round(x0 * width), round(y0 * height), round(x1 * width), round(y1 * height)
        if right - left < 1 or bottom - top < 1:
            continue
        obj = ET.SubElement(root, "object")
        for tag, value in (
            ("name", p.label),
            ("pose", "Unspecified"),
            ("truncated", 0),
            ("difficult", 0),
            ("score", f"{p.score:.4f}"),
        ):
            ET.SubElement(obj, tag).text = str(value)
        box = ET.SubElement(obj, "bndbox")
        for tag, value in (("xmin", left + 1), ("ymin", top + 1), ("xmax", right), ("ymax", bottom)):
            ET.SubElement(box, tag).text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def list_captured(root: Path) -> dict[str, dict]:
    """Finished captures (those with a readable sidecar), oldest first."""
    found = {}
    for sidecar in sorted((root / "predictions").glob("*.json")):
        try:
            entry = json.loads(sidecar.read_text(encoding="utf-8"))
            found[entry["id"]] = {"split": entry["split"], "files": list(entry["files"]), "bytes": int(entry["bytes"])}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("capture: ignoring unreadable %s (%s)", sidecar, exc)
            sidecar.unlink(missing_ok=True)
    return found


def remove_unfinished(root: Path) -> None:
    """Remove temp files and captured images or annotations that no sidecar lists (a crash mid-capture)."""
    listed = {f for entry in list_captured(root).values() for f in entry["files"]}
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(root).as_posix()
        temp = path.name.startswith(".") and path.name.endswith(".tmp")
        orphan = CAPTURE_ID.match(path.stem) and path.suffix in (".jpg", ".xml") and relative not in listed
        if temp or orphan:
            log.info("capture: removing unfinished %s", relative)
            path.unlink()
