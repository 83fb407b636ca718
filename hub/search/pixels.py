"""Product photos as the image tower's input, as the checkpoint's CLIP image processor specifies it.

The processor's settings come from the checkpoint: the ``image_processor`` entry of ``processor_config.json``
when it has one, else ``preprocessor_config.json`` — the order transformers reads them in. For the settings
every CLIP checkpoint uses (resize the shortest edge with bicubic, centre-crop, scale by 1/255, normalise),
``ClipPixels`` does the same steps in Pillow and NumPy: 2 ms instead of 12 ms for a 600×800 photo, which matters
when the model runs at 10 images/s on two cores, and read without importing transformers' image processing
(which imports torch: seconds at every start). Any other setting (an exact height × width resize, no crop, other
resampling…) is left to transformers' processor itself (``ProcessorPixels``): slower, never different.
``tests/indexing/test_model.py`` checks both against the processor.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

BICUBIC = 3  # PIL's (and transformers' PILImageResampling) number for bicubic
# CLIP's normalisation, where a config is silent: transformers' OPENAI_CLIP_MEAN and OPENAI_CLIP_STD (written here,
# since importing transformers for them costs seconds; tests/indexing/test_model.py compares)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class Pixels(Protocol):
    """Turns one image into the tower's (3, height, width) float32 input."""

    shape: tuple[int, int]  # (height, width) of what it returns

    def __call__(self, image: Image.Image) -> np.ndarray: ...


class ClipPixels:
    """CLIP's preprocessing in Pillow and NumPy: shortest edge to ``side`` (bicubic), centre crop, [0, 1], normalise.

    A JPEG not yet decoded is decoded at a reduced scale (never below the target size)."""

    def __init__(self, side: int, crop: tuple[int, int], mean: Any, std: Any) -> None:
        self.side = side
        self.shape = crop
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)

    def __call__(self, image: Image.Image) -> np.ndarray:
        side, (crop_h, crop_w) = self.side, self.shape
        if image.format == "JPEG":
            image.draft("RGB", (side, side))  # no effect once the image is loaded
        rgb = image.convert("RGB")
        w, h = rgb.size
        size = (side, int(side * h / w)) if w <= h else (int(side * w / h), side)
        resized = rgb.resize(size, Image.Resampling.BICUBIC, reducing_gap=None)
        left, top = (size[0] - crop_w) // 2, (size[1] - crop_h) // 2
        cropped = resized.crop((left, top, left + crop_w, top + crop_h))
        pixels = np.asarray(cropped, dtype=np.float32) * (1 / 255)
        pixels = (pixels - self.mean) / self.std
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))


class ProcessorPixels:
    """transformers' own image processor (any settings it accepts)."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor
        self.shape = self(Image.new("RGB", (97, 61), "gray")).shape[1:]

    def __call__(self, image: Image.Image) -> np.ndarray:
        return np.asarray(self.processor(images=image.convert("RGB"), return_tensors="np")["pixel_values"][0],
                          dtype=np.float32)


def processor_settings(folder: Path | None) -> dict[str, Any] | None:
    """The image processor's settings in the checkpoint folder, found where transformers looks for them first;
    None when the folder holds none (or they cannot be read as JSON: the processor then says what is wrong)."""
    if folder is None:
        return None
    try:
        nested = folder / "processor_config.json"
        if nested.is_file():
            settings = json.loads(nested.read_text()).get("image_processor")
            if isinstance(settings, dict):
                return settings
        flat = folder / "preprocessor_config.json"
        if flat.is_file():
            settings = json.loads(flat.read_text())
            return settings if isinstance(settings, dict) else None
    except (OSError, ValueError, AttributeError):
        return None
    return None


def _square(size: Any) -> tuple[int, int] | None:
    """A crop size as a config may write it (an int, [height, width] or {height, width}), or None."""
    if isinstance(size, int) and not isinstance(size, bool):
        return size, size
    if isinstance(size, list | tuple) and len(size) == 2:
        return int(size[0]), int(size[1])
    if isinstance(size, dict) and set(size) == {"height", "width"}:
        return int(size["height"]), int(size["width"])
    return None


def _shortest_edge(size: Any) -> int | None:
    """The side of a shortest-edge resize (an int or {shortest_edge}); None for any other kind of resize."""
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    if isinstance(size, dict) and set(size) == {"shortest_edge"}:
        return int(size["shortest_edge"])
    return None


def clip_pixels(settings: dict[str, Any]) -> ClipPixels | None:
    """``ClipPixels`` for these processor settings, or None when they ask for anything it does not do exactly."""
    try:
        if settings.get("use_square_size"):
            return None  # (the processor then resizes to a square of its default size)
        steps = ("do_resize", "do_center_crop", "do_rescale", "do_normalize", "do_convert_rgb")
        if not all(settings.get(step, True) is True for step in steps):
            return None
        if abs(float(settings.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-12:
            return None
        if int(settings.get("resample", BICUBIC)) != BICUBIC:
            return None
        side = _shortest_edge(settings.get("size", {"shortest_edge": 224}))
        crop = _square(settings.get("crop_size", {"height": 224, "width": 224}))
        mean = np.asarray(settings.get("image_mean", OPENAI_CLIP_MEAN), dtype=np.float32)
        std = np.asarray(settings.get("image_std", OPENAI_CLIP_STD), dtype=np.float32)
    except (TypeError, ValueError, KeyError):
        return None
    if side is None or crop is None or mean.shape != (3,) or std.shape != (3,) or side < min(crop):
        return None
    return ClipPixels(side, crop, mean, std)
