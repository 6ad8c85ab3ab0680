"""CUDA paths (``pytest -m cuda``): precision, memory layout, the OOM fallback, NCCL, GPU decode.

Skipped, with the reason, on a machine without CUDA; scripts/bench/gpu_suite.py runs them as
its last step on a GPU. Their CPU stand-ins: tests/test_faults.py (OOM halving with a fake
OOM), tests/test_distributed.py (sharded extraction over gloo), tests/test_device_decode.py
(the decode path run on the CPU). Tolerances, stated:
- fp16 / amp vs fp32: test accuracy within one test image, test features cosine >= 0.999;
- channels_last vs contiguous input: features equal to 1e-3 relative (cuDNN picks other kernels);
- nvJPEG vs Pillow views: at most 16 grey levels at a pixel, < 1.0 on average (the two JPEG
  decoders' IDCTs round differently; the crop boxes are identical).
"""
import os
import subprocess
import sys

import pytest
import torch

from helpers import ROOT, accuracies, make_image_folder, run_train, tiny_clip, write_tiny_config

CUDA = torch.cuda.is_available()
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (none on this machine)")]


@pytest.fixture
def task(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=40)
    cfg = write_tiny_config(tmp_path / "cfg.yaml", tiny_clip(tmp_path), epochs=5, batch=8)
    return data, cfg, tmp_path


def train_on_cuda(task, name, *opts):
    data, cfg, tmp = task
    out = tmp / name
    trainer = run_train("--root", data, "--seed", 1, "--trainer", "TaskRes", "--config-file", cfg,
                        "--output-dir", out, "DATASET.NUM_SHOTS", 16, "USE_CUDA", True, *opts)
    return trainer, out


def test_fp16_and_amp_give_the_accuracy_of_fp32(task):
    runs = {prec: train_on_cuda(task, prec, "TRAINER.TaskRes.PREC", prec) for prec in ("fp32", "fp16", "amp")}
    trainer32 = runs["fp32"][0]
    assert trainer32.device.type == "cuda"
    n_test = len(trainer32.dm.dataset.test)
    acc = {prec: accuracies(out / "log.txt")[-1] for prec, (_, out) in runs.items()}
    feats = {prec: t.feature_source.features("test")[0].float() for prec, (t, _) in runs.items()}
    for prec in ("fp16", "amp"):
        assert abs(acc[prec] - acc["fp32"]) <= 100.0 / n_test + 1e-6, (prec, acc)
        cos = torch.nn.functional.cosine_similarity(feats[prec], feats["fp32"], dim=-1)
        assert cos.min() >= 0.999, (prec, cos.min())
    assert runs["fp16"][0].clip_model.dtype == torch.float16  # fp16 really ran in half on the GPU


def test_amp_steps_through_a_grad_scaler(task):
    trainer, _ = train_on_cuda(task, "amp", "TRAINER.TaskRes.PREC", "amp")
    assert isinstance(trainer.scaler, torch.amp.GradScaler) and trainer.scaler.is_enabled()
    assert trainer.scaler.get_scale() > 0
    assert trainer.model.prompt_learner.text_feature_residuals.abs().sum() > 0  # the steps were taken


def test_channels_last_input_gives_the_features_of_contiguous_input(tmp_path):
    from trainers.clip_trainer import build_untrained_clip  # RN50's architecture, no weights needed

    model = build_untrained_clip("RN50", "cuda").float().eval()
    images = torch.randn(8, 3, 224, 224, device="cuda")
    with torch.inference_mode():
        plain = model.encode_image(images.contiguous())
        last = model.encode_image(images.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(last, plain, rtol=1e-3, atol=1e-3 * plain.abs().max().item())


def test_an_oom_while_encoding_halves_the_batch_and_goes_on():
    from engine.features import _split_on_oom

    conv = torch.nn.Conv2d(3, 256, 3, padding=1).cuda().eval()

    def encode(images):  # ~51 MB of activations per 224 px image in fp32
        return conv(images).mean(dim=(2, 3))

    images = torch.randn(64, 3, 224, 224, device="cuda")
    with torch.inference_mode():
        expected = torch.cat([encode(images[i:i + 4]) for i in range(0, 64, 4)])
        torch.cuda.empty_cache()
        total = torch.cuda.get_device_properties(0).total_memory
        used = torch.cuda.memory_allocated()
        # room for the input and ~16 images of activations, not 64: a real CUDA OOM at full size
        torch.cuda.set_per_process_memory_fraction(min(1.0, (used + 16 * 51e6 * 1.5) / total))
        try:
            out = _split_on_oom(encode, images)
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(torch.cuda.device_count() < 2 if CUDA else True, reason="needs 2 CUDA GPUs for NCCL")
def test_sharded_extraction_over_nccl_builds_the_single_process_cache(tmp_path):
    data = make_image_folder(tmp_path / "data")
    cfg = write_tiny_config(tmp_path / "cfg.yaml", tiny_clip(tmp_path), epochs=4, batch=4)
    args = ["--root", data, "--seed", "1", "--trainer", "TaskRes", "--config-file", cfg,
            "--output-dir", str(tmp_path / "out"), "DATASET.NUM_SHOTS", "4", "USE_CUDA", "True",
            "FEATURE_CACHE.TRAIN_VIEWS", "3", "FEATURE_CACHE.ENCODE_BATCH_SIZE", "4"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    runs = {}
    for name, launcher in (("single", ["--nproc_per_node", "1"]), ("sharded", ["--nproc_per_node", "2"])):
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", *launcher, "-m", "engine.distributed",
             "extract", *args, "FEATURE_CACHE.DIR", str(tmp_path / name)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = {os.path.relpath(os.path.join(d, f), tmp_path / name): torch.load(os.path.join(d, f), weights_only=True)
                      for d, _, fs in os.walk(tmp_path / name) for f in fs if f.endswith(".pt")}
    assert sorted(runs["single"]) == sorted(runs["sharded"]) and len(runs["single"]) == 5
    for name, bundle in runs["single"].items():
        other = runs["sharded"][name]
        assert bundle["keys"] == other["keys"]
        # same batches on each GPU: byte-equal where the kernels are deterministic, else float noise
        torch.testing.assert_close(other["features"], bundle["features"], rtol=1e-3, atol=1e-3)


def test_gpu_decode_matches_the_cpu_path(tmp_path):
    from torchvision.io import read_file

    from engine.data.data_manager import view_seed
    from engine.data.device_decode import DevicePipeline, decode_images
    from test_device_decode import cpu_view, levels, photo, transform

    for is_train in (True, False):
        tfm = transform(is_train, size=224)
        pipeline = DevicePipeline.from_transform(tfm)
        for i in range(4):
            path = photo(tmp_path / f"{i}.jpg", seed=i)
            image = decode_images([read_file(path)], "cuda")[0]
            assert image.is_cuda
            for v in range(4):
                seed = view_seed(path, v, 1)
                worst, mean = levels(pipeline.views(image, [seed])[0].cpu(), cpu_view(tfm, path, seed))
                assert worst <= 16 and mean < 1.0, (is_train, i, v, worst, mean)
