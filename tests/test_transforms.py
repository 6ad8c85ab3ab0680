"""engine.data.transforms: Dassl's train/test pipelines and the feature-cache signature."""
import json

import numpy as np
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
def test_output_is_the_normalised_image_resized_and_cropped(is_train):
    """A 300x200 image whose red rises left to right, green constant, blue 0: the output has the
    model's size, un-normalises to the source's constant channels, and keeps the red ramp's order
    (flipped or not in training; centred, unflipped at test time)."""
    width, height = 300, 200
    red = np.tile(np.linspace(0, 255, width).round().astype(np.uint8), (height, 1))
    arr = np.stack([red, np.full_like(red, 200), np.zeros_like(red)], axis=-1)
    torch.manual_seed(0)
    out = build_transform(taskres_cfg(), is_train=is_train)(Image.fromarray(arr))
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    pixels = out * torch.tensor(CLIP_STD)[:, None, None] + torch.tensor(CLIP_MEAN)[:, None, None]
    torch.testing.assert_close(pixels[1], torch.full((224, 224), 200 / 255), rtol=0, atol=1e-5)
    torch.testing.assert_close(pixels[2], torch.zeros(224, 224), rtol=0, atol=1e-5)
    row = pixels[0].mean(dim=0)  # red along the width, rows averaged
    steps = row[1:] - row[:-1]
    assert (steps >= -1e-3).all() or (steps <= 1e-3).all()  # a crop of a ramp, maybe mirrored
    assert (row.max() - row.min()).item() > 0.05  # the ramp is still there
    if not is_train:  # resize to 336x224, centre crop: columns 56..279 of the resized ramp
        assert (steps >= -1e-3).all()
        assert row[112].item() == pytest.approx(0.5, abs=0.01)  # the middle stays the middle
        assert row[0].item() == pytest.approx(56 / 335, abs=0.01) and row[-1].item() == pytest.approx(279 / 335, abs=0.01)


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


# ---- CLIP preprocessing belongs to the model ---------------------------------------------------
def test_model_input_settings_take_the_model_s_values_unless_set_on_purpose():
    from engine.data.transforms import model_input_settings

    inp = get_cfg_default().INPUT  # Dassl's defaults: nothing chosen by the user
    updates, sources, conflicts = model_input_settings(inp, 336, "bicubic", CLIP_MEAN, CLIP_STD)
    assert updates == {"SIZE": (336, 336), "INTERPOLATION": "bicubic", "PIXEL_MEAN": tuple(CLIP_MEAN),
                       "PIXEL_STD": tuple(CLIP_STD), "TRANSFORMS": ("normalize",)}
    assert set(sources.values()) == {"model"} and conflicts == []
    # a value set on purpose stays, and a contradiction names both values
    inp = taskres_cfg().INPUT
    inp.SIZE = (64, 64)
    inp.TRANSFORMS = ["random_flip"]
    updates, sources, conflicts = model_input_settings(inp, 224, "bicubic", CLIP_MEAN, CLIP_STD)
    assert updates == {} and sources["SIZE"] == "config" and sources["PIXEL_MEAN"] == "model"
    assert conflicts[0] == ("INPUT.SIZE is (64, 64) but the model expects (224, 224); using INPUT.SIZE as set "
                            "(remove it from the config to use the model's)")
    assert "INPUT.TRANSFORMS ['random_flip'] has no normalize" in conflicts[1] and "0.481455" in conflicts[1]
    assert len(conflicts) == 2


def test_zero_shot_clip_without_a_trainer_config_sees_images_as_clip_does(tmp_path):
    """No --config-file: Dassl's INPUT defaults (bilinear, ImageNet mean/std, 224, no normalize)
    must give way to the model's pipeline (the tiny CLIP: 32 px, bicubic, CLIP mean/std)."""
    import clip
    from helpers import accuracies, make_image_folder, run_train, tiny_clip, write_tiny_config

    data = make_image_folder(tmp_path / "data")
    weights = tiny_clip(tmp_path)
    common = ("--root", data, "--trainer", "ZeroshotCLIP", "--eval-only")
    bare = run_train(*common, "--backbone", weights, "--output-dir", tmp_path / "bare", "DATASET.NAME", "ImageFolder",
                     "DATALOADER.NUM_WORKERS", 0)
    img = Image.open(bare.dm.dataset.test[0].impath).convert("RGB")
    _, preprocess = clip.load(weights)
    assert torch.equal(bare.dm.tfm_test(img), preprocess(img))
    log = (tmp_path / "bare" / "log.txt").read_text()
    assert "Input pipeline: 32x32 (model), bicubic (model), mean [0.48145466" in log
    assert "training view" not in log  # ZeroshotCLIP encodes none
    # the same numbers as with a trainer config that spells CLIP's values out
    cfg = write_tiny_config(tmp_path / "cfg.yaml", weights)
    run_train(*common, "--config-file", cfg, "--output-dir", tmp_path / "configured", "DATALOADER.NUM_WORKERS", 0)
    assert accuracies(tmp_path / "bare" / "log.txt") == accuracies(tmp_path / "configured" / "log.txt")


def test_an_input_setting_that_contradicts_the_model_is_kept_with_a_warning(tmp_path):
    from helpers import make_image_folder, run_train, tiny_clip

    data = make_image_folder(tmp_path / "data")
    trainer = run_train("--root", data, "--trainer", "ZeroshotCLIP", "--eval-only", "--backbone", tiny_clip(tmp_path),
                        "--output-dir", tmp_path / "out", "DATASET.NAME", "ImageFolder", "DATALOADER.NUM_WORKERS", 0,
                        "INPUT.INTERPOLATION", "nearest")
    log = (tmp_path / "out" / "log.txt").read_text()
    assert "INPUT.INTERPOLATION is nearest but the model expects bicubic; using INPUT.INTERPOLATION as set" in log
    assert trainer.dm.tfm_test.transforms[0].interpolation == InterpolationMode.NEAREST
    assert "Input pipeline: 32x32 (model), nearest (config)" in log
