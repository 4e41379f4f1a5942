"""Images as the model receives them: RGB uint8 [3, side, side] (bilinear square resize), the one
conversion training data and evaluation share; floats and normalisation happen on the device."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def to_uint8(img: Image.Image, side: int) -> torch.Tensor:
    """RGB uint8 tensor [3, side, side] of a PIL image (bilinear resize to a square)."""
    img = img.convert("RGB").resize((side, side), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


def load_image(path: str | Path, side: int) -> torch.Tensor:
    """The file at `path` as to_uint8 gives it. Raises one of IMAGE_ERRORS when it cannot be decoded."""
    with Image.open(path) as im:
        return to_uint8(im, side)


def check_image(path: Path) -> str | None:
    """None if the file looks like a readable image, else the reason."""
    if not path.is_file():
        return "file not found"
    try:
        with Image.open(path) as im:
            im.verify()
    except IMAGE_ERRORS as err:
        return f"unreadable image ({type(err).__name__}: {err})"
    return None
