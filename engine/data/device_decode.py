"""Decode JPEGs and cut their views on the accelerator (``FEATURE_CACHE.DECODE device``).

On a GPU the feature cache's cold path is bound by JPEG decoding in CPU workers (an H100 decoded
~1,210 img/s with 8 workers where RN50's fp16 forward takes ~9,800). Here the workers only read
the file's bytes; the main process decodes them with torchvision's ``decode_jpeg`` on the device
(nvJPEG on CUDA, libjpeg-turbo on a CPU) and cuts every view there with tensor ops:

    pipeline = DevicePipeline.from_transform(tfm)     # None: the transform has steps we cannot move
    images = decode_images(list_of_byte_tensors, device)            # [3, H, W] uint8 each
    views = pipeline.views(images[0], seeds=[view_seed(...), ...])  # [V, 3, h, w] uint8

Each view draws its crop and flip from torch's generator seeded exactly as the CPU path seeds
it (``view_seed``), with the same calls in the same order, so the crop boxes and flips are
identical; only the pixels differ, by the resampling (tensor bicubic with antialias vs Pillow's
bicubic: at most 3 grey levels, < 0.25 on average, on a CPU where both decoders are libjpeg-turbo
and decode identically) and, on CUDA, by nvJPEG's decoder: ``tests/test_device_decode.py`` and
``tests/test_cuda.py`` state and check the tolerances. (torchvision 0.29 marks its image
decoders deprecated in favour of TorchCodec; they are what the pinned version has.) Supported pipelines are Dassl's of this framework: train ``[random_resized_crop]
[random_flip]`` or a plain resize, test ``resize + center crop``, each ending in ``ToTensor``
(+ ``Normalize``, which ``features.split_transform`` applies on the device). Anything else
(colour jitter, cutout, ...) returns None and keeps the CPU path.
"""
import logging
import warnings

import torch
from torchvision.io import ImageReadMode, decode_image, decode_jpeg
from torchvision.transforms import CenterCrop, Normalize, RandomHorizontalFlip, RandomResizedCrop, Resize, ToTensor
from torchvision.transforms import functional as F

from ..errors import ConfigError, DataError

# torchvision 0.29 warns on every decoder call that TorchCodec will replace them: said once above
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision", category=DeprecationWarning)

logger = logging.getLogger(__name__)

DECODE_CHOICES = ("cpu", "device", "auto")
_JPEG_MAGIC = b"\xff\xd8"


class DevicePipeline:
    """A Dassl transform as tensor steps on uint8 [3, H, W] images (see the module docstring)."""

    def __init__(self, steps):
        self.steps = steps  # [(kind, torchvision transform)], kind in resize|center_crop|rrc|flip

    @classmethod
    def from_transform(cls, transform):
        """The device version of ``transform``, or None when one of its steps has none."""
        steps = list(getattr(transform, "transforms", []))
        if steps and isinstance(steps[-1], Normalize):
            steps = steps[:-1]
        if not steps or not isinstance(steps[-1], ToTensor):
            return None
        kinds = []
        for t in steps[:-1]:
            if isinstance(t, RandomResizedCrop):
                kinds.append(("rrc", t))
            elif isinstance(t, RandomHorizontalFlip):
                kinds.append(("flip", t))
            elif isinstance(t, Resize) and t.max_size is None:
                kinds.append(("resize", t))
            elif isinstance(t, CenterCrop):
                kinds.append(("center_crop", t))
            else:
                return None
        return cls(kinds)

    def views(self, image, seeds):
        """The views of one decoded image: [len(seeds), 3, h, w] uint8, one per seed (None = unseeded)."""
        out = []
        for seed in seeds:
            with torch.random.fork_rng(devices=[]):
                if seed is not None:
                    torch.manual_seed(seed)
                out.append(self._apply(image))
        return torch.stack(out)

    def _apply(self, img):
        for kind, t in self.steps:
            if kind == "rrc":  # the same generator calls as RandomResizedCrop.forward
                top, left, h, w = RandomResizedCrop.get_params(img, t.scale, t.ratio)
                img = F.resized_crop(img, top, left, h, w, list(t.size), t.interpolation, antialias=True)
            elif kind == "flip":
                if torch.rand(1) < t.p:
                    img = F.hflip(img)
            elif kind == "resize":
                img = F.resize(img, t.size, t.interpolation, antialias=True)
            else:
                img = F.center_crop(img, list(t.size))
        return img


def decode_images(datas, device, paths=None):
    """Decode a batch of encoded files (uint8 byte tensors) into RGB uint8 [3, H, W] on ``device``.

    JPEGs go through ``decode_jpeg`` in one batched call on the device; any other format (PNG,
    a JPEG the device decoder refuses, e.g. CMYK on some nvJPEG versions) is decoded on the CPU
    and moved, so no file is dropped; a file no decoder reads is one sentence naming ``paths[i]``.
    """
    device = torch.device(device)
    out = [None] * len(datas)
    jpeg = [i for i, d in enumerate(datas) if bytes(d[:2].tolist()) == _JPEG_MAGIC]
    if jpeg:
        try:
            decoded = decode_jpeg([datas[i] for i in jpeg], mode=ImageReadMode.RGB, device=device)
            for i, img in zip(jpeg, decoded):
                out[i] = img
        except RuntimeError as e:  # one bad file fails the batch: decode them one by one below
            logger.warning("Batched JPEG decode on %s failed (%s); decoding this batch image by image", device, e)
    for i, img in enumerate(out):
        if img is None:
            out[i] = _decode_one(datas[i], device, paths[i] if paths else f"image {i} of the batch")
    return out


def _decode_one(data, device, path):
    if device.type != "cpu" and bytes(data[:2].tolist()) == _JPEG_MAGIC:
        try:
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            pass  # e.g. a CMYK JPEG: the CPU decoder below handles it
    try:
        return decode_image(data, mode=ImageReadMode.RGB).to(device)
    except RuntimeError as e:
        raise DataError(f"Cannot read image {path} ({e}); the file is corrupt or not an image: replace or remove it.") from e


def resolve_decode(choice, device, transforms):
    """Whether to decode on the device: 'cpu' never, 'device' always (a CPU runs it too, as a stand-in),
    'auto' on CUDA. Returns (use_device_decode, reason) where reason says why not when it cannot."""
    if choice not in DECODE_CHOICES:
        raise ConfigError(f"FEATURE_CACHE.DECODE must be one of {', '.join(DECODE_CHOICES)}, got {choice!r}.")
    wanted = choice == "device" or (choice == "auto" and torch.device(device).type == "cuda")
    if not wanted:
        return False, ""
    unsupported = [name for name, t in transforms.items() if DevicePipeline.from_transform(t) is None]
    if unsupported:
        return False, f"the {' and '.join(unsupported)} transform has steps only the CPU path runs"
    return True, ""
