"""Small helpers with Dassl's names: seeding, files, json, images, parameter counts."""
import json
import logging
import os
import random
import warnings

import numpy as np
import torch

from ..errors import DataError
from .io import atomic_write_text, mkdir_if_missing

logger = logging.getLogger(__name__)

__all__ = [
    "mkdir_if_missing",
    "check_isfile",
    "read_json",
    "write_json",
    "set_random_seed",
    "read_image",
    "to_rgb",
    "listdir_nohidden",
    "count_num_param",
    "collect_env_info",
    "tolist_if_not",
]


def set_random_seed(seed):
    """Seed Python's, NumPy's and torch's RNGs (every CUDA device included)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)  # a no-op without CUDA


def count_num_param(model=None, params=None):
    """Number of parameters of ``model`` (or of the iterable ``params``)."""
    if model is not None:
        return sum(p.numel() for p in model.parameters())
    if params is not None:
        return sum(p.numel() for p in params)
    raise ValueError("count_num_param() needs a model or params.")


def check_isfile(fpath):
    """True when ``fpath`` is a file; warn (as Dassl does) when it is not."""
    isfile = os.path.isfile(fpath)
    if not isfile:
        warnings.warn(f'No file found at "{fpath}"')
    return isfile


def read_json(fpath):
    """Load a json file; a missing or malformed file raises DataError naming it."""
    try:
        with open(fpath, "r", encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as e:
        raise DataError(f"JSON file not found: {fpath}; check the path.") from e
    except json.JSONDecodeError as e:
        raise DataError(
            f"JSON file {fpath} is malformed (line {e.lineno}, column {e.colno}); fix it or delete it so it is rebuilt."
        ) from e


def write_json(obj, fpath):
    """Write ``obj`` as indented json; atomic, so a crash never leaves half a file."""
    folder = os.path.dirname(fpath)
    if folder:
        mkdir_if_missing(folder)
    atomic_write_text(fpath, json.dumps(obj, indent=4, separators=(",", ": ")))


def listdir_nohidden(path, sort=False):
    """Entries of ``path`` not starting with a dot, optionally sorted."""
    items = [name for name in os.listdir(path) if not name.startswith(".")]
    if sort:
        items.sort()
    return items


def read_image(path):
    """Open an image as an RGB ``PIL.Image``; a missing or unreadable file raises DataError."""
    from PIL import Image  # Pillow loads lazily: only the data path needs it

    if not os.path.exists(path):
        raise DataError(f"Image not found: {path}; check DATASET.ROOT and the dataset's split file.")
    try:
        with Image.open(path) as img:
            return to_rgb(img, path)  # converting loads the pixels, so the file can be closed
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"Cannot read image {path} ({e}); the file is corrupt or not an image: replace or remove it.") from e


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def to_rgb(img, path="image"):
    """An 8-bit RGB ``PIL.Image`` of any mode, as ``convert("RGB")`` gives for 8-bit files.

    ``convert("RGB")`` clips high-bit-depth grey to 0..255 (a 16-bit PNG becomes almost all
    white), so those are rescaled to the 8-bit range first: 16-bit grey (``I;16*``, and ``I``,
    Pillow's 32-bit integer mode, with values in 0..65535) by 255/65535, which maps a 16-bit value
    ``257 * x`` back to ``x``; float grey (``F``) with values in [0, 1] by 255. Other ranges are
    ambiguous and raise DataError. Palette images with transparency go through RGBA (Pillow's own
    advice), 8-bit modes (L, LA, P, RGBA, CMYK, YCbCr, 1) are Pillow's ``convert("RGB")``.
    """
    from PIL import Image

    mode = img.mode
    if mode in SIXTEEN_BIT_MODES or mode in ("I", "F"):
        values = np.asarray(img, dtype=np.float64)
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        full = 1.0 if mode == "F" else 65535.0
        if not (np.isfinite(low) and np.isfinite(high) and low >= 0 and high <= full):
            kind = "float" if mode == "F" else "32-bit integer"
            expected = "[0, 1]" if mode == "F" else "0..65535"
            raise DataError(f"Image {path} is {kind} grey (mode {mode}) with values {low:g}..{high:g}, outside "
                            f"{expected}, so its 8-bit brightness is ambiguous; convert it to an 8- or 16-bit file.")
        grey = np.rint(values * (255.0 / full)).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")


def collect_env_info():
    """The environment as text for the log (Dassl's helper): torch's report plus Pillow's version."""
    import PIL
    from torch.utils.collect_env import get_pretty_env_info

    return get_pretty_env_info() + f"\n        Pillow ({PIL.__version__})"


def tolist_if_not(x):
    """``x`` as a list (Dassl's helper): a non-list becomes ``[x]``."""
    return x if isinstance(x, list) else [x]
