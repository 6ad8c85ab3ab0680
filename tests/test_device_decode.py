"""Device decoding (engine/data/device_decode.py, FEATURE_CACHE.DECODE) against the CPU path.

The promise: the same crop boxes and flips as the Pillow path for every view (same seeds, same
generator calls), pixels within a stated tolerance. Measured on a CPU (libjpeg-turbo in both
decoders, so the decode is identical; only the resampling differs): at most 3 grey levels when
shrinking 350x400 to 32 px, 1 at 224 px, on average < 0.25 (scripts/bench/gpu_suite.py prints it). These tests run the device code on the CPU (torchvision decodes there too); the
CUDA run of the same comparison is tests/test_cuda.py::test_gpu_decode_matches_the_cpu_path.
"""
import glob
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.io import read_file

from engine.config import get_cfg_default
from engine.data.data_manager import view_seed
from engine.data.device_decode import DevicePipeline, decode_images, resolve_decode
from engine.data.transforms import build_transform
from engine.errors import ConfigError
from engine.features import encode_views, split_transform
from engine.data.datasets import Datum
from helpers import make_image_folder, run_train, tiny_clip, write_tiny_config

MAX_LEVELS, MEAN_LEVELS = 3, 0.3  # uint8 grey levels, device path vs Pillow on a CPU


def photo(path, size=(350, 400), seed=0, mode="RGB"):
    """A smooth, photo-like JPEG (noise upsampled), so a wrong crop box shows as a large difference."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray((rng.random((size[0] // 10, size[1] // 10, 3)) * 255).astype(np.uint8))
    img = small.resize((size[1], size[0]), Image.BICUBIC).convert(mode)
    img.save(path, quality=90)
    return str(path)


def transform(is_train, choices=("random_resized_crop", "random_flip", "normalize"), size=64):
    cfg = get_cfg_default()
    cfg.INPUT.SIZE = (size, size)
    cfg.INPUT.INTERPOLATION = "bicubic"
    cfg.INPUT.TRANSFORMS = list(choices)
    return build_transform(cfg, is_train)


def cpu_view(tfm, path, seed):
    worker, _ = split_transform(tfm)  # the uint8 part the CPU workers run
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return worker(Image.open(path).convert("RGB"))


def levels(a, b):
    d = (a.int() - b.int()).abs().float()
    return d.max().item(), d.mean().item()


@pytest.mark.parametrize("is_train", [True, False])
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_views_have_the_cpu_paths_crops_and_pixels_within_the_tolerance(tmp_path, is_train, mode):
    path = photo(tmp_path / "x.jpg", mode=mode)
    tfm = transform(is_train)
    pipeline = DevicePipeline.from_transform(tfm)
    image = decode_images([read_file(path)], "cpu")[0]
    assert image.shape[0] == 3 and image.dtype == torch.uint8  # grey JPEGs come out RGB, as Pillow's convert
    seeds = [view_seed(path, v, 1) for v in range(12)]
    ours = pipeline.views(image, seeds)
    for seed, view in zip(seeds, ours):
        worst, mean = levels(view, cpu_view(tfm, path, seed))
        assert worst <= MAX_LEVELS and mean <= MEAN_LEVELS
    if is_train:  # the comparison can fail: another seed's crop is far off
        worst, mean = levels(ours[0], cpu_view(tfm, path, seeds[1]))
        assert mean > 5


def test_a_png_is_decoded_on_the_cpu_and_gives_the_same_view(tmp_path):
    path = str(tmp_path / "x.png")
    Image.open(photo(tmp_path / "x.jpg")).save(path)
    tfm = transform(False)
    view = DevicePipeline.from_transform(tfm).views(decode_images([read_file(path)], "cpu")[0], [None])[0]
    assert levels(view, cpu_view(tfm, path, 0))[0] <= MAX_LEVELS


def test_only_pipelines_with_device_steps_are_moved():
    assert DevicePipeline.from_transform(transform(True)) is not None
    assert DevicePipeline.from_transform(transform(True, ("normalize",))) is not None  # plain resize
    assert DevicePipeline.from_transform(transform(True, ("random_resized_crop", "colorjitter", "normalize"))) is None
    assert DevicePipeline.from_transform(transform(True, ("random_flip", "normalize", "instance_norm"))) is None
    tfms = {"train": transform(True, ("random_resized_crop", "cutout")), "test": transform(False)}
    assert resolve_decode("device", "cpu", tfms) == (False, "the train transform has steps only the CPU path runs")
    assert resolve_decode("auto", "cpu", {"train": transform(True)}) == (False, "")  # auto: CUDA only
    assert resolve_decode("device", "cpu", {"train": transform(True)}) == (True, "")
    with pytest.raises(ConfigError, match="FEATURE_CACHE.DECODE must be one of cpu, device, auto, got 'gpu'"):
        resolve_decode("gpu", "cpu", {})


@pytest.mark.parametrize("is_train", [True, False])
def test_encode_views_on_the_device_path_matches_the_worker_path(tmp_path, is_train):
    paths = [photo(tmp_path / f"{i}.jpg", seed=i) for i in range(5)]
    items = [Datum(impath=p, label=0, classname="a") for p in paths]
    tfm = transform(is_train)
    keys = [(i, v) for i in range(5) for v in ((0, 2) if is_train else (0,))]

    def encode(images):  # a fixed linear "encoder" on the normalised pixels
        return images.flatten(1)[:, ::97].clone()

    cpu = encode_views(encode, items, tfm, keys, 4, 0, "cpu", is_train, seed=1)
    dev = encode_views(encode, items, tfm, keys, 4, 0, "cpu", is_train, seed=1, decode_on_device=True)
    assert cpu.shape == dev.shape
    std = min(tfm.transforms[-1].std)
    assert (cpu - dev).abs().max() <= MAX_LEVELS / 255 / std + 1e-5


def test_train_py_with_device_decode_trains_logs_it_and_keeps_its_own_cache_rows(tmp_path):
    data = make_image_folder(tmp_path / "data")
    cfg = write_tiny_config(tmp_path / "cfg.yaml", tiny_clip(tmp_path), epochs=2, batch=4)
    cache = tmp_path / "cache"

    def run(name, decode):
        out = tmp_path / name
        trainer = run_train("--root", data, "--seed", 1, "--trainer", "TaskRes", "--config-file", cfg,
                            "--output-dir", out, "DATASET.NUM_SHOTS", 4, "FEATURE_CACHE.DIR", cache,
                            "FEATURE_CACHE.DECODE", decode)
        return trainer, open(out / "log.txt").read()

    _, log_cpu = run("cpu", "cpu")
    bundles_cpu = set(glob.glob(str(cache / "**" / "*.pt"), recursive=True))
    trainer, log_dev = run("dev", "device")
    assert "JPEGs decoded and views cut on cpu (FEATURE_CACHE.DECODE device)" in log_dev
    bundles = set(glob.glob(str(cache / "**" / "*.pt"), recursive=True))
    assert len(bundles - bundles_cpu) == len(bundles_cpu) > 0  # its own rows, never Pillow's
    assert trainer.feature_store.encoded > 0
    _, log_auto = run("auto", "auto")  # auto on a CPU = the CPU path: reuses the cpu rows
    assert "JPEGs decoded" not in log_auto
    assert set(glob.glob(str(cache / "**" / "*.pt"), recursive=True)) == bundles
    assert os.path.exists(tmp_path / "auto" / "results_test.json")


def test_a_corrupt_file_on_the_device_path_is_one_sentence_naming_it(tmp_path):
    from engine.errors import DataError

    good = photo(tmp_path / "good.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(open(good, "rb").read()[:200])  # a JPEG cut after its header
    items = [Datum(impath=p, label=0, classname="a") for p in (good, str(bad))]
    with pytest.raises(DataError, match=r"Cannot read image .*bad\.jpg .*replace or remove it"):
        encode_views(lambda x: x.flatten(1)[:, :4], items, transform(False), [(0, 0), (1, 0)], 2, 0, "cpu", False,
                     decode_on_device=True)
