"""A looping camera clip for Chromium's fake camera (``--use-file-for-fake-video-capture``).

Chromium's own fake camera is a green pacman on a timer; for the README's screenshots a moving colour
gradient with a name on it reads as a stream. The clip is raw Y4M (Chromium reads nothing else) and
every motion in it completes whole cycles over the clip's length, so Chromium's looping shows no jump.
Colour conversion is PyAV's; text is Pillow's when it is installed (matplotlib brings it), else none.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from PIL.ImageFont import FreeTypeFont, ImageFont

Colour = tuple[int, int, int]
FONT_FILES = ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
              "/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf")


def y4m_header(width: int, height: int, fps: int) -> bytes:
    """The stream header: 4:2:0 planes, progressive, square pixels."""
    return f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode("ascii")


def _font(size: int) -> FreeTypeFont | ImageFont:
    from PIL import ImageFont

    for path in FONT_FILES:
        if Path(path).exists():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size)


def _text_layer(width: int, height: int, title: str, subtitle: str) -> npt.NDArray[np.float32] | None:
    """White text with a soft shadow as an RGBA float array (0..1), or None without Pillow."""
    try:
        from PIL import Image, ImageDraw, ImageFilter
    except ImportError:
        return None
    shadow = Image.new("L", (width, height), 0)
    text = Image.new("L", (width, height), 0)
    # Sized by the narrow side too: an upright clip is shown cropped to a phone or a PK tile, its middle kept.
    big, small = _font(min(height // 7, width // 10)), _font(min(height // 16, width // 18))
    for layer in (shadow, text):
        draw = ImageDraw.Draw(layer)
        draw.text((width / 2, height * 0.44), title, fill=255, font=big, anchor="mm")
        draw.text((width / 2, height * 0.60), subtitle, fill=255, font=small, anchor="mm")
    shadow = shadow.filter(ImageFilter.GaussianBlur(radius=height / 90))
    return np.stack([np.asarray(shadow, np.float32) / 255, np.asarray(text, np.float32) / 255])


def frame_rgb(width: int, height: int, phase: float, colours: tuple[Colour, Colour],
              text: npt.NDArray[np.float32] | None,
              grid: npt.NDArray[np.float32] | None = None) -> npt.NDArray[np.uint8]:
    """One frame at ``phase`` (0..1 around the loop): a drifting two-colour gradient, a glowing dot, the text.
    ``grid``: the pixel coordinates (``np.mgrid``), computed once per clip by the caller."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32) if grid is None else grid
    turn = 2 * math.pi * phase
    mix = 0.5 + 0.5 * np.sin(2 * math.pi * (0.7 * x / width + 0.5 * y / height) - turn)
    a, b = (np.array(c, np.float32) / 255 for c in colours)
    rgb = a * (1 - mix[..., None]) + b * mix[..., None]
    # The dot runs a Lissajous figure (1:2), closed after one loop.
    cx, cy = width * (0.5 + 0.36 * math.sin(turn)), height * (0.5 + 0.30 * math.sin(2 * turn))
    glow = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * (height / 9) ** 2))
    rgb = rgb + (1 - rgb) * glow[..., None] * 0.85
    if text is not None:
        shadow, letters = text
        rgb = rgb * (1 - 0.55 * shadow[..., None])
        rgb = rgb * (1 - letters[..., None]) + letters[..., None]
    return np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)


def write_clip(path: Path, *, title: str, subtitle: str, colours: tuple[Colour, Colour], width: int = 640,
               height: int = 360, fps: int = 30, seconds: float = 4.0) -> Path:
    """Write the clip to ``path`` (about 350 kB per frame at 640x360: a few seconds is tens of MB)."""
    text = _text_layer(width, height, title, subtitle)
    grid = np.mgrid[0:height, 0:width].astype(np.float32)
    count = max(1, round(fps * seconds))
    with path.open("wb") as out:
        out.write(y4m_header(width, height, fps))
        for i in range(count):
            frame = av.VideoFrame.from_ndarray(frame_rgb(width, height, i / count, colours, text, grid),
                                               format="rgb24")
            # yuv420p as one (h * 3/2, w) array: the Y plane, then U and V, without the planes' row padding.
            planes = frame.reformat(format="yuv420p").to_ndarray()
            out.write(b"FRAME\n")
            out.write(planes.tobytes())
    return path
