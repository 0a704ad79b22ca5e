"""Duplicate frames: exact (same pixels) and near-identical (a perceptual difference hash).

A camera that watches a quiet scene sends the same picture again and again; kept twice, such a
frame weighs double in training, and split across train and test it leaks. `dhash` is the
difference hash (Krawetz's dHash): the frame in grey, shrunk to (HASH_SIDE + 1) x HASH_SIDE with
area averaging, one bit per horizontal neighbour pair (is the left pixel brighter). It ignores
JPEG re-encoding, noise, small brightness changes and resizing; an object that moves or appears
flips many bits. Two frames are near-identical when their hashes differ in at most
NEAR_DUPLICATE_BITS of the HASH_SIDE**2 bits.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from training.errors import DatasetError
from training.transforms import read_bgr

HASH_SIDE = 16  # 256 bits: small objects on a fixed background still change several of them
# Measured on the demo video (320x240, moving shapes, 15 fps; 20-60 frames): re-encoding a frame at JPEG
# quality 80-95 changes 0-5 of the 256 bits (quality 60: up to 13), +10 brightness 0-4, sensor-like noise
# (sigma 8) 3-12; consecutive frames, where objects moved a few pixels, 6-29 (median ~14); frames 2 s apart
# 70-90. 8 bits drops re-sent and re-encoded copies of a still scene and keeps nearly every frame in which
# something moved.
NEAR_DUPLICATE_BITS = 8


@dataclass(frozen=True)
class ImageHash:
    exact: str  # sha256 of the decoded pixels (and their shape)
    perceptual: np.ndarray  # packed bits, uint8 (HASH_SIDE**2 / 8,)


def dhash(image: np.ndarray, side: int = HASH_SIDE) -> np.ndarray:
    """Difference hash of a BGR (or grey) image: side*side bits, packed into bytes."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    small = cv2.resize(grey, (side + 1, side), interpolation=cv2.INTER_AREA).astype(np.int16)
    return np.packbits(small[:, 1:] < small[:, :-1])


def image_hash(image: np.ndarray) -> ImageHash:
    """Both hashes of a decoded image: sha256 of its pixels (exact copies) and its dHash (near copies)."""
    digest = hashlib.sha256(str(image.shape).encode() + np.ascontiguousarray(image).tobytes()).hexdigest()
    return ImageHash(digest, dhash(image))


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bits that differ between one packed hash `a` and each row of `b` (or one hash `b`)."""
    return _POPCOUNT[np.bitwise_xor(a, b)].sum(axis=-1, dtype=np.int32)


class DuplicateFinder:
    """Remembers the hashes of kept images; `match` names the kept image a new one duplicates, if any."""

    def __init__(self, max_bits: int = NEAR_DUPLICATE_BITS):
        if not 0 <= max_bits < HASH_SIDE * HASH_SIDE:
            raise DatasetError(f"near-duplicate threshold {max_bits} bits is not within 0..{HASH_SIDE**2 - 1}")
        self.max_bits = max_bits
        self._exact: dict[str, str] = {}
        self._names: list[str] = []
        self._bits = np.zeros((64, HASH_SIDE * HASH_SIDE // 8), np.uint8)  # rows beyond len(_names) unused

    def match(self, h: ImageHash) -> Optional[tuple[str, str]]:
        """(kind, name of the kept image) when `h` is an exact or near duplicate of one, else None."""
        if h.exact in self._exact:
            return "exact", self._exact[h.exact]
        if len(self._names):
            distances = hamming(h.perceptual, self._bits[: len(self._names)])
            nearest = int(np.argmin(distances))
            if distances[nearest] <= self.max_bits:
                return "near", self._names[nearest]
        return None

    def keep(self, name: str, h: ImageHash) -> None:
        self._exact.setdefault(h.exact, name)
        if len(self._names) == len(self._bits):
            self._bits = np.vstack([self._bits, np.zeros_like(self._bits)])
        self._bits[len(self._names)] = h.perceptual
        self._names.append(name)

    def add_all(self, named_paths: Sequence[tuple[str, Path]]) -> None:
        """Remember images that are kept whatever comes (an existing data set)."""
        for name, path in named_paths:
            self.keep(name, image_hash(read_bgr(path)))
