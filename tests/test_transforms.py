"""engine.data.transforms: Dassl's train/test pipelines and the feature-cache signature."""
import json

import pytest
import torch
from PIL import Image
from torchvision.transforms import (
    CenterCrop,
    Compose,
    InterpolationMode,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    ToTensor,
)

from engine.config import get_cfg_default
from engine.data.transforms import AVAI_CHOICES, build_transform, transform_signature
from engine.errors import ConfigError

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def taskres_cfg():
    """The INPUT node of configs/trainers/TaskRes."""
    cfg = get_cfg_default()
    cfg.INPUT.SIZE = (224, 224)
    cfg.INPUT.INTERPOLATION = "bicubic"
    cfg.INPUT.PIXEL_MEAN = CLIP_MEAN
    cfg.INPUT.PIXEL_STD = CLIP_STD
    cfg.INPUT.TRANSFORMS = ["random_resized_crop", "random_flip", "normalize"]
    return cfg


def test_taskres_train_pipeline():
    expected = Compose([
        RandomResizedCrop((224, 224), scale=(0.08, 1.0), interpolation=InterpolationMode.BICUBIC),
        RandomHorizontalFlip(),
        ToTensor(),
        Normalize(mean=CLIP_MEAN, std=CLIP_STD),
    ])
    assert repr(build_transform(taskres_cfg(), is_train=True)) == repr(expected)


def test_taskres_test_pipeline():
    expected = Compose([
        Resize(224, interpolation=InterpolationMode.BICUBIC),
        CenterCrop((224, 224)),
        ToTensor(),
        Normalize(mean=CLIP_MEAN, std=CLIP_STD),
    ])
    assert repr(build_transform(taskres_cfg(), is_train=False)) == repr(expected)


@pytest.mark.parametrize("is_train", [True, False])
def test_output_shape(is_train):
    img = Image.new("RGB", (300, 200), color=(10, 200, 30))
    out = build_transform(taskres_cfg(), is_train=is_train)(img)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32


def test_normalisation_values():
    rgb = (128, 64, 32)
    out = build_transform(taskres_cfg(), is_train=False)(Image.new("RGB", (300, 200), color=rgb))
    for c in range(3):
        expected = (rgb[c] / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c]
        assert out[c].min().item() == pytest.approx(expected, abs=1e-5)
        assert out[c].max().item() == pytest.approx(expected, abs=1e-5)


def test_test_pipeline_resizes_smaller_edge_then_center_crops():
    # left half black, right half white, 400x200: the smaller edge goes to 224 (448x224),
    # the 224x224 center crop keeps the middle, so the left half of the crop is black
    img = Image.new("L", (400, 200), 0)
    img.paste(255, (200, 0, 400, 200))
    cfg = taskres_cfg()
    cfg.INPUT.TRANSFORMS = []
    out = build_transform(cfg, is_train=False)(img.convert("RGB"))
    assert out.shape == (3, 224, 224)
    assert out[:, :, :100].max().item() == 0.0 and out[:, :, 124:].min().item() == 1.0


def test_train_is_reproducible_under_a_torch_seed():
    img = Image.effect_noise((300, 200), 64).convert("RGB")
    tfm = build_transform(taskres_cfg(), is_train=True)
    torch.manual_seed(3)
    a = tfm(img)
    torch.manual_seed(3)
    assert torch.equal(a, tfm(img))


def test_without_crop_train_resizes_to_size():
    cfg = taskres_cfg()
    cfg.INPUT.TRANSFORMS = ["random_flip"]
    tfm = build_transform(cfg, is_train=True)
    assert repr(tfm.transforms[0]) == repr(Resize((224, 224), interpolation=InterpolationMode.BICUBIC))
    assert tfm(Image.new("RGB", (300, 200))).shape == (3, 224, 224)


def test_random_crop_uses_padding():
    cfg = taskres_cfg()
    cfg.INPUT.SIZE = (32, 32)
    cfg.INPUT.TRANSFORMS = ["random_crop", "random_flip"]
    tfm = build_transform(cfg, is_train=True)
    assert repr(tfm.transforms[0]) == repr(RandomCrop((32, 32), padding=4))
    assert tfm(Image.new("RGB", (32, 32))).shape == (3, 32, 32)


def test_every_choice_builds_and_runs():
    cfg = taskres_cfg()
    cfg.INPUT.SIZE = (32, 32)
    cfg.INPUT.GB_K = 3
    cfg.INPUT.TRANSFORMS = list(AVAI_CHOICES)
    img = Image.effect_noise((40, 36), 64).convert("RGB")
    for is_train in (True, False):
        assert build_transform(cfg, is_train=is_train)(img).shape == (3, 32, 32)


def test_choices_argument_overrides_config():
    tfm = build_transform(taskres_cfg(), is_train=True, choices=["random_flip"])
    assert not any(isinstance(t, (Normalize, RandomResizedCrop)) for t in tfm.transforms)


def test_no_transform():
    cfg = taskres_cfg()
    cfg.INPUT.NO_TRANSFORM = True
    assert build_transform(cfg) is None


@pytest.mark.parametrize(
    "key, value, pattern",
    [
        ("TRANSFORMS", ["random_flip", "random_rotate"], r'"random_rotate".*INPUT.TRANSFORMS.*random_resized_crop'),
        ("TRANSFORMS", ["randaugment"], r'"randaugment".*not implemented.*random_flip'),
        ("INTERPOLATION", "lanczos", r'INPUT.INTERPOLATION "lanczos".*bicubic'),
    ],
)
def test_bad_config_raises_config_error(key, value, pattern):
    cfg = taskres_cfg()
    setattr(cfg.INPUT, key, value)
    with pytest.raises(ConfigError, match=pattern):
        build_transform(cfg, is_train=True)


def test_signature_is_stable_and_order_free():
    a = transform_signature(taskres_cfg(), is_train=True)
    cfg = taskres_cfg()
    cfg.INPUT.TRANSFORMS = ["normalize", "random_flip", "random_resized_crop"]
    assert transform_signature(cfg, is_train=True) == a
    assert json.loads(a)["choices"] == ["normalize", "random_flip", "random_resized_crop"]
    assert transform_signature(taskres_cfg(), is_train=False) != a


@pytest.mark.parametrize(
    "key, value, changes_train, changes_test",
    [
        ("SIZE", (256, 256), True, True),
        ("INTERPOLATION", "bilinear", True, True),
        ("RRCROP_SCALE", (0.5, 1.0), True, False),
        ("PIXEL_MEAN", [0.5, 0.5, 0.5], True, True),
        ("PIXEL_STD", [0.5, 0.5, 0.5], True, True),
        ("TRANSFORMS", ["random_resized_crop", "normalize"], True, False),
        ("CROP_PADDING", 8, False, False),  # random_crop is not chosen
    ],
)
def test_signature_tracks_what_changes_the_output(key, value, changes_train, changes_test):
    base = taskres_cfg()
    cfg = taskres_cfg()
    setattr(cfg.INPUT, key, value)
    for is_train, changes in ((True, changes_train), (False, changes_test)):
        differs = transform_signature(cfg, is_train) != transform_signature(base, is_train)
        assert differs is changes, (key, is_train)
