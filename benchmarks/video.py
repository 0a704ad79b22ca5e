"""The 1080p H.264 test file the runner section decodes.

OpenCV's pip wheels carry FFmpeg's H.264 decoder but no encoder, so the file is encoded with an
ffmpeg binary (on PATH, or the one the imageio-ffmpeg package ships) with libx264: the demo video
(shapes the demo detector knows) scaled to 1920x1080, or FFmpeg's testsrc2 pattern without it.
Without any ffmpeg, OpenCV writes MPEG-4 Part 2 ('mp4v') instead and the note says so.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

WIDTH, HEIGHT, FPS = 1920, 1080, 30


def ffmpeg_binary() -> Optional[str]:
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return None


def make_video(
    out: Path,
    frames: int,
    demo_video: Optional[Path],
    size: tuple[int, int] = (WIDTH, HEIGHT),
    fps: int = FPS,
    start_s: float = 0.0,
) -> tuple[Path, str]:
    """(path, codec description) of a `frames`-long video, `size` (width, height) at `fps` (default 1080p30),
    from `start_s` seconds into its content (with ffmpeg; the content loops)."""
    width, height = size
    out.parent.mkdir(parents=True, exist_ok=True)
    ffmpeg = ffmpeg_binary()
    if ffmpeg:
        if demo_video and demo_video.is_file():
            source = ["-stream_loop", "-1", "-ss", f"{start_s:g}", "-i", str(demo_video)]
            source += ["-vf", f"scale={width}:{height},fps={fps}"]
            what = f"the demo video scaled to {width}x{height}"
        else:
            source = ["-f", "lavfi", "-ss", f"{start_s:g}", "-i", f"testsrc2=size={width}x{height}:rate={fps}"]
            what = "FFmpeg's testsrc2 pattern"
        command = [
            ffmpeg,
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            *source,
            "-frames:v",
            str(frames),
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv420p",
            str(out),
        ]
        subprocess.run(command, check=True, timeout=300)
        return out, f"H.264 (libx264, yuv420p) {width}x{height} {fps} fps, {frames} frames of {what}"
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 256, (54, 96, 3), dtype=np.uint8), (width, height))
    for i in range(frames):
        frame = np.roll(base, 8 * i, axis=1)
        x = 10 * i % max(width - 400, 1)
        cv2.rectangle(frame, (100 + x, height // 4), (400 + x, height // 2), (0, 0, 255), -1)
        writer.write(frame)
    writer.release()
    return out, (
        f"MPEG-4 Part 2 ('mp4v') {width}x{height}: no ffmpeg with libx264 here (pip install imageio-ffmpeg "
        "or apt-get install ffmpeg for H.264)"
    )


def frames_1080p(demo_video: Optional[Path], n: int) -> list[np.ndarray]:
    """`n` 1080p BGR frames in memory: the demo video's first frames scaled up, else a moving pattern."""
    frames = []
    if demo_video and demo_video.is_file():
        capture = cv2.VideoCapture(str(demo_video))
        while len(frames) < n:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(cv2.resize(frame, (WIDTH, HEIGHT)))
        capture.release()
    base = cv2.resize(np.random.default_rng(0).integers(0, 256, (54, 96, 3), dtype=np.uint8), (WIDTH, HEIGHT))
    while len(frames) < n:
        frames.append(np.roll(base, 16 * len(frames), axis=1))
    return frames
