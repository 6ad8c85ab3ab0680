"""Image transforms from ``cfg.INPUT`` with Dassl's names (``build_transform``).

Train (in this order, each when chosen in INPUT.TRANSFORMS): a resize to SIZE when no crop is
chosen, random_translation, random_crop (CROP_PADDING), random_resized_crop (RRCROP_SCALE),
random_flip, colorjitter, randomgrayscale, gaussian_blur, ToTensor, cutout, normalize,
gaussian_noise, instance_norm. Test: resize the smaller edge to max(SIZE), center-crop SIZE,
ToTensor, normalize, instance_norm. ``center_crop`` is accepted and is what testing always
does. Dassl's augmentation policies (autoaugment / randaugment) are not part of this engine.
The custom transforms draw from torch's RNG (Dassl's use Python's), so seeding torch alone
fixes a whole augmented view.

``transform_signature`` names everything that changes a transform's output; the feature
cache keys stored image features on it. ``model_input_settings`` decides, for a model that
comes with its own preprocessing (CLIP), which INPUT values the model sets and which the user
set on purpose.
"""
import json
import logging

import torch
import torchvision.transforms.functional as F
from torchvision.transforms import (
    CenterCrop,
    ColorJitter,
    Compose,
    GaussianBlur,
    InterpolationMode,
    Normalize,
    RandomApply,
    RandomCrop,
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    ToTensor,
)

from ..errors import ConfigError

logger = logging.getLogger(__name__)

AVAI_CHOICES = [
    "random_flip",
    "random_resized_crop",
    "normalize",
    "instance_norm",
    "random_crop",
    "random_translation",
    "center_crop",
    "cutout",
    "gaussian_noise",
    "colorjitter",
    "randomgrayscale",
    "gaussian_blur",
]
# Valid in Dassl, not implemented here: named in the error so the user knows why.
DASSL_ONLY_CHOICES = [
    "imagenet_policy",
    "cifar10_policy",
    "svhn_policy",
    "randaugment",
    "randaugment_fixmatch",
    "randaugment2",
]

INTERPOLATION_MODES = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}

# Bump when the meaning of a transform name changes, so cached features are rebuilt.
_SIGNATURE_VERSION = 1


class Random2DTranslation:
    """With probability ``p``: resize to 1.125x (height, width) and take a random crop of
    (height, width); otherwise resize straight to (height, width)."""

    def __init__(self, height, width, p=0.5, interpolation=InterpolationMode.BILINEAR):
        self.height = height
        self.width = width
        self.p = p
        self.interpolation = interpolation

    def __call__(self, img):
        if torch.rand(1).item() > self.p:
            return F.resize(img, [self.height, self.width], interpolation=self.interpolation)
        big_h, big_w = int(round(self.height * 1.125)), int(round(self.width * 1.125))
        img = F.resize(img, [big_h, big_w], interpolation=self.interpolation)
        top = int(round(torch.rand(1).item() * (big_h - self.height)))
        left = int(round(torch.rand(1).item() * (big_w - self.width)))
        return F.crop(img, top, left, self.height, self.width)

    def __repr__(self):
        return f"{type(self).__name__}(height={self.height}, width={self.width}, p={self.p})"


class InstanceNormalization:
    """Normalise a CxHxW tensor by its own per-channel mean and std."""

    def __init__(self, eps=1e-8):
        self.eps = eps

    def __call__(self, img):
        c = img.shape[0]
        flat = img.reshape(c, -1)
        return (img - flat.mean(1).view(c, 1, 1)) / (flat.std(1).view(c, 1, 1) + self.eps)

    def __repr__(self):
        return f"{type(self).__name__}(eps={self.eps})"


class Cutout:
    """Zero ``n_holes`` random squares of side ``length`` in a CxHxW tensor (clipped at borders)."""

    def __init__(self, n_holes=1, length=16):
        self.n_holes = n_holes
        self.length = length

    def __call__(self, img):
        h, w = img.shape[1], img.shape[2]
        mask = torch.ones(h, w, dtype=img.dtype)
        half = self.length // 2
        for _ in range(self.n_holes):
            y = int(torch.randint(h, (1,)))
            x = int(torch.randint(w, (1,)))
            mask[max(0, y - half):min(h, y + half), max(0, x - half):min(w, x + half)] = 0
        return img * mask

    def __repr__(self):
        return f"{type(self).__name__}(n_holes={self.n_holes}, length={self.length})"


class GaussianNoise:
    """With probability ``p`` add N(mean, std) noise to a tensor."""

    def __init__(self, mean=0.0, std=0.15, p=0.5):
        self.mean = mean
        self.std = std
        self.p = p

    def __call__(self, img):
        if torch.rand(1).item() > self.p:
            return img
        return img + torch.randn(img.size()) * self.std + self.mean

    def __repr__(self):
        return f"{type(self).__name__}(mean={self.mean}, std={self.std}, p={self.p})"


def _check_choices(choices):
    for choice in choices:
        if choice in DASSL_ONLY_CHOICES:
            raise ConfigError(
                f'INPUT.TRANSFORMS "{choice}" (a Dassl augmentation policy) is not implemented in this engine; '
                f'choose from {", ".join(AVAI_CHOICES)}.'
            )
        if choice not in AVAI_CHOICES:
            raise ConfigError(f'Unknown transform "{choice}" in INPUT.TRANSFORMS; choose from {", ".join(AVAI_CHOICES)}.')


def _interpolation(cfg):
    name = cfg.INPUT.INTERPOLATION
    if name not in INTERPOLATION_MODES:
        raise ConfigError(
            f'Unknown INPUT.INTERPOLATION "{name}"; choose one of {", ".join(INTERPOLATION_MODES)}.'
        )
    return INTERPOLATION_MODES[name]


def _size(cfg):
    size = cfg.INPUT.SIZE
    if len(size) != 2:
        raise ConfigError(f"INPUT.SIZE must be (height, width), got {tuple(size)}.")
    return tuple(int(s) for s in size)


def build_transform(cfg, is_train=True, choices=None):
    """The train or test transform of ``cfg.INPUT`` (None when INPUT.NO_TRANSFORM is set).

    ``choices`` overrides ``cfg.INPUT.TRANSFORMS`` (Dassl's signature).
    """
    if cfg.INPUT.NO_TRANSFORM:
        logger.info("Note: no transform is applied!")
        return None
    choices = list(cfg.INPUT.TRANSFORMS if choices is None else choices)
    _check_choices(choices)
    if is_train:
        return _build_transform_train(cfg, choices)
    return _build_transform_test(cfg, choices)


def _build_transform_train(cfg, choices):
    logger.info("Building transform_train")
    interp = _interpolation(cfg)
    size = _size(cfg)
    inp = cfg.INPUT
    tfms = []

    # Without a crop nothing would bring the image to SIZE, so resize to it
    if "random_crop" not in choices and "random_resized_crop" not in choices:
        logger.info(f"+ resize to {size[0]}x{size[1]}")
        tfms.append(Resize(size, interpolation=interp))
    if "random_translation" in choices:
        logger.info("+ random translation")
        tfms.append(Random2DTranslation(size[0], size[1]))
    if "random_crop" in choices:
        logger.info(f"+ random crop (padding = {inp.CROP_PADDING})")
        tfms.append(RandomCrop(size, padding=inp.CROP_PADDING))
    if "random_resized_crop" in choices:
        scale = tuple(inp.RRCROP_SCALE)
        logger.info(f"+ random resized crop (size={size}, scale={scale})")
        tfms.append(RandomResizedCrop(size, scale=scale, interpolation=interp))
    if "random_flip" in choices:
        logger.info("+ random flip")
        tfms.append(RandomHorizontalFlip())
    if "colorjitter" in choices:
        logger.info(
            f"+ color jitter (brightness={inp.COLORJITTER_B}, contrast={inp.COLORJITTER_C}, "
            f"saturation={inp.COLORJITTER_S}, hue={inp.COLORJITTER_H})"
        )
        tfms.append(
            ColorJitter(
                brightness=inp.COLORJITTER_B,
                contrast=inp.COLORJITTER_C,
                saturation=inp.COLORJITTER_S,
                hue=inp.COLORJITTER_H,
            )
        )
    if "randomgrayscale" in choices:
        logger.info("+ random gray scale")
        tfms.append(RandomGrayscale(p=inp.RGS_P))
    if "gaussian_blur" in choices:
        logger.info(f"+ gaussian blur (kernel={inp.GB_K})")
        tfms.append(RandomApply([GaussianBlur(inp.GB_K)], p=inp.GB_P))

    logger.info("+ to torch tensor of range [0, 1]")
    tfms.append(ToTensor())

    if "cutout" in choices:
        logger.info(f"+ cutout (n_holes={inp.CUTOUT_N}, length={inp.CUTOUT_LEN})")
        tfms.append(Cutout(inp.CUTOUT_N, inp.CUTOUT_LEN))
    if "normalize" in choices:
        logger.info(f"+ normalization (mean={list(inp.PIXEL_MEAN)}, std={list(inp.PIXEL_STD)})")
        tfms.append(Normalize(mean=list(inp.PIXEL_MEAN), std=list(inp.PIXEL_STD)))
    if "gaussian_noise" in choices:
        logger.info(f"+ gaussian noise (mean={inp.GN_MEAN}, std={inp.GN_STD})")
        tfms.append(GaussianNoise(inp.GN_MEAN, inp.GN_STD))
    if "instance_norm" in choices:
        logger.info("+ instance normalization")
        tfms.append(InstanceNormalization())
    return Compose(tfms)


def _build_transform_test(cfg, choices):
    logger.info("Building transform_test")
    interp = _interpolation(cfg)
    size = _size(cfg)
    inp = cfg.INPUT
    logger.info(f"+ resize the smaller edge to {max(size)}")
    logger.info(f"+ {size[0]}x{size[1]} center crop")
    logger.info("+ to torch tensor of range [0, 1]")
    tfms = [Resize(max(size), interpolation=interp), CenterCrop(size), ToTensor()]
    if "normalize" in choices:
        logger.info(f"+ normalization (mean={list(inp.PIXEL_MEAN)}, std={list(inp.PIXEL_STD)})")
        tfms.append(Normalize(mean=list(inp.PIXEL_MEAN), std=list(inp.PIXEL_STD)))
    if "instance_norm" in choices:
        logger.info("+ instance normalization")
        tfms.append(InstanceNormalization())
    return Compose(tfms)


# Which config values each choice reads (train side); the test side reads only
# SIZE, INTERPOLATION and, for normalize, the mean/std.
_TRAIN_KEYS = {
    "random_crop": ["CROP_PADDING"],
    "random_resized_crop": ["RRCROP_SCALE"],
    "colorjitter": ["COLORJITTER_B", "COLORJITTER_C", "COLORJITTER_S", "COLORJITTER_H"],
    "randomgrayscale": ["RGS_P"],
    "gaussian_blur": ["GB_K", "GB_P"],
    "cutout": ["CUTOUT_N", "CUTOUT_LEN"],
    "normalize": ["PIXEL_MEAN", "PIXEL_STD"],
    "gaussian_noise": ["GN_MEAN", "GN_STD"],
}


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def transform_signature(cfg, is_train, choices=None):
    """A stable string naming everything that changes ``build_transform(cfg, is_train)``'s output.

    Choice order does not matter (the pipeline order is fixed), so choices are sorted; only the
    config values a chosen transform reads are included, so unrelated keys do not invalidate
    cached features.
    """
    inp = cfg.INPUT
    if inp.NO_TRANSFORM:
        return json.dumps({"v": _SIGNATURE_VERSION, "train": bool(is_train), "no_transform": True}, sort_keys=True)
    chosen = sorted(set(inp.TRANSFORMS if choices is None else choices))
    _check_choices(chosen)
    if not is_train:  # the test pipeline only uses these two of the choices
        chosen = [c for c in chosen if c in ("normalize", "instance_norm")]
    desc = {
        "v": _SIGNATURE_VERSION,
        "train": bool(is_train),
        "choices": chosen,
        "size": [int(s) for s in inp.SIZE],
        "interpolation": inp.INTERPOLATION,
    }
    for choice in chosen:
        if not is_train and choice != "normalize":
            continue
        for key in _TRAIN_KEYS.get(choice, []):
            desc[key.lower()] = _plain(inp[key])
    return json.dumps(desc, sort_keys=True, separators=(",", ":"))


def _same(a, b):
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return len(a) == len(b) and all(abs(float(x) - float(y)) < 1e-7 for x, y in zip(a, b))


def interpolation_name(mode):
    """INPUT.INTERPOLATION's name of a torchvision InterpolationMode (None when it has none)."""
    return {v: k for k, v in INTERPOLATION_MODES.items()}.get(mode)


def model_input_settings(inp, size, interpolation, mean, std):
    """Which INPUT values to use with a model whose own preprocessing is (size, interpolation, mean, std).

    A value still at Dassl's default was not chosen: the model's is used. A value the user
    changed (yaml, flag or opts) is kept, and when it differs from the model's it is reported.
    With INPUT.TRANSFORMS empty (Dassl's default) ``normalize`` is added, since the model
    expects normalised input. Returns ``(updates, sources, conflicts)``: the INPUT keys to set,
    where each value comes from ("model" / "config"), and one sentence per contradiction.
    """
    expected = {"SIZE": (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size),
                "INTERPOLATION": interpolation, "PIXEL_MEAN": tuple(mean), "PIXEL_STD": tuple(std)}
    from ..config import get_cfg_default

    dassl = get_cfg_default().INPUT  # a value still equal to Dassl's default was not chosen by the user
    updates, sources, conflicts = {}, {}, []
    for key, model_value in expected.items():
        value = inp[key] if isinstance(inp[key], str) else tuple(inp[key])
        if _same(value, dassl[key]) and not _same(value, model_value):
            updates[key] = model_value
            sources[key] = "model"
        elif _same(value, model_value):
            sources[key] = "model"
        else:
            sources[key] = "config"
            conflicts.append(f"INPUT.{key} is {_show(value)} but the model expects {_show(model_value)}; "
                             f"using INPUT.{key} as set (remove it from the config to use the model's)")
    if not inp.NO_TRANSFORM:
        if not list(inp.TRANSFORMS):
            updates["TRANSFORMS"] = ("normalize",)
        elif "normalize" not in inp.TRANSFORMS:
            conflicts.append(f"INPUT.TRANSFORMS {list(inp.TRANSFORMS)} has no normalize but the model expects input "
                             f"normalised with mean {_show(expected['PIXEL_MEAN'])} and std {_show(expected['PIXEL_STD'])}")
    return updates, sources, conflicts


def _show(value):
    if isinstance(value, str):
        return value
    return "(" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) + ")"
