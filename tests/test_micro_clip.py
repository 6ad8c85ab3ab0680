"""scripts/micro_clip.py: the demo's micro-CLIP, built on a reduced recipe (a few steps).

What the demo relies on: the file is an OpenAI-format checkpoint `clip.load` reads, the model it
gives computes what pretraining computed (cheap 28 px path and short text = the standard 224 px /
77-token path), a recipe gives the same bytes whatever the threads and SIMD code paths, and a
cache built by another recipe, or changed since, is rebuilt.
"""
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import clip
from datasets import fashion_mnist as fm
from scripts import micro_clip as mc

pytestmark = pytest.mark.skipif(
    not os.path.exists(os.path.join(fm.DEBIAN_DIR, "train-images-idx3-ubyte.gz")),
    reason="needs `apt-get install dataset-fashion-mnist`")

TINY = dataclasses.replace(mc.Recipe(), steps=3, batch_size=16)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return mc.build(str(tmp_path_factory.mktemp("micro") / "micro.pt"), TINY)


def read(path):
    return torch.load(path, weights_only=True)


def test_file_is_an_openai_checkpoint_clip_load_builds(built):
    assert zipfile.ZipFile(built).testzip() is None  # every CRC-32 right after the id is made the recipe's
    state = read(built)
    for key in ("visual.conv1.weight", "visual.class_embedding", "visual.positional_embedding", "visual.ln_pre.weight",
                "visual.transformer.resblocks.1.attn.in_proj_weight", "visual.transformer.resblocks.1.mlp.c_proj.bias",
                "visual.ln_post.bias", "visual.proj", "token_embedding.weight", "positional_embedding",
                "transformer.resblocks.0.attn.out_proj.weight", "ln_final.weight", "text_projection", "logit_scale"):
        assert key in state, key
    assert not any(k.startswith("visual.transformer.resblocks.2.") or k.startswith("transformer.resblocks.1.") for k in state)
    assert {v.dtype for v in state.values()} == {torch.float16}  # as OpenAI ships its weights
    assert state["visual.conv1.weight"].shape == (64, 3, 32, 32)
    assert torch.allclose(state["logit_scale"].float().exp(), torch.tensor(100.0), rtol=1e-3)  # CLIP's
    assert state["visual.positional_embedding"].shape == (50, 64)  # 7 x 7 patches + class token: 224 px
    assert state["token_embedding.weight"].shape == (49408, 64) and state["positional_embedding"].shape == (77, 64)

    model, _ = clip.load(built)  # strict load: every key used, none missing
    assert (model.embed_dim, model.image_resolution) == (64, 224)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v.float()) for k, v in state.items())


def test_standard_path_computes_what_pretraining_computed(built, tmp_path):
    model, preprocess = clip.load(built)
    micro = mc.load_micro_clip(built, TINY)
    images, labels = mc.load_test_images()
    pixels = []
    for i in range(6):  # through PNG files, as the demo's dataset stores them
        path = tmp_path / f"{i}.png"
        Image.fromarray(images[i].numpy()).save(path)
        pixels.append(preprocess(Image.open(path)))
    with torch.no_grad():
        standard = model.encode_image(torch.stack(pixels))
        cheap = mc.encode_small_images(micro, mc.to_unit(images[:6]), TINY)
        cosine = torch.nn.functional.cosine_similarity(standard, cheap)
        assert cosine.min() > 0.999, cosine
        assert torch.allclose(standard.norm(dim=-1), cheap.norm(dim=-1), rtol=0.01)

        prompts = clip.tokenize(["a photo of a dark sneaker.", "a bag.", "a picture of a bright T-shirt or top."])
        short = prompts[:, : int((prompts > 0).sum(1).max())]
        assert torch.allclose(model.encode_text(prompts), micro.encode_text(short), atol=1e-5)


def test_conv1_is_folded_from_a_grid_and_the_cheap_path_is_conv1():
    grid = torch.randn(8, 4, 4, dtype=torch.float64)
    conv = mc.conv1_from_grid(grid, TINY)
    assert conv.shape == (8, 3, 32, 32)
    assert torch.equal(conv[:, 0], conv[:, 1]) and torch.equal(conv[:, 0], conv[:, 2])  # equal channels
    blocks = conv[:, 0].reshape(8, 4, 8, 4, 8)  # [W, grid row, 8, grid column, 8]
    assert torch.equal(blocks, blocks[:, :, :1, :, :1].expand_as(blocks))  # constant 8x8 blocks
    assert torch.allclose(blocks[:, :, 0, :, 0], grid * mc.fold_scale(TINY))
    assert torch.allclose(mc.grid_from_conv1(conv, TINY), grid)
    # The cheap path is conv1 on the normalised, bicubic-resized image (a float resize: no uint8 rounding).
    images = torch.rand(3, 28, 28, dtype=torch.float64)
    resized = torch.einsum("ua,nab,vb->nuv", mc.resize_matrix(), images, mc.resize_matrix())
    mean = torch.tensor(mc.CLIP_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(mc.CLIP_STD, dtype=torch.float64).view(1, 3, 1, 1)
    normalised = (resized[:, None].expand(-1, 3, -1, -1) - mean) / std
    direct = torch.nn.functional.conv2d(normalised, conv, stride=32).flatten(2).transpose(1, 2)
    cheap = mc.patch_embeddings(grid, images, mc.block_resize_matrix(TINY), TINY)
    assert torch.allclose(cheap, direct, atol=1e-9)


def test_prompt_features_have_the_recipes_norm(built):
    micro = mc.load_micro_clip(built, TINY)
    norms = mc.prompt_features(micro, fm.CLASSNAMES).norm(dim=-1)
    assert abs(norms.mean().item() - TINY.text_feature_norm) < 0.01  # fp16 rounding only


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# Long enough that float noise would compound through the steps (the full recipe runs 1600).
REPRO = dataclasses.replace(mc.Recipe(), steps=40, batch_size=32)


@pytest.fixture(scope="module")
def repro_built(tmp_path_factory):
    return mc.build(str(tmp_path_factory.mktemp("repro") / "one.pt"), REPRO, threads=1)


def test_same_recipe_same_bytes_with_one_and_two_threads_other_seed_other_bytes(repro_built, built, tmp_path):
    two = mc.build(str(tmp_path / "two.pt"), REPRO, threads=2)
    assert sha256(repro_built) == sha256(two) == json.load(open(repro_built + ".json"))["sha256"]
    other = read(mc.build(str(tmp_path / "other.pt"), dataclasses.replace(TINY, seed=2)))
    assert not torch.equal(read(built)["visual.conv1.weight"], other["visual.conv1.weight"])


def test_same_bytes_through_other_simd_code_paths(repro_built, tmp_path):
    """Another CPU, simulated: torch's kernels without SIMD (ATEN_CPU_CAPABILITY=default) and MKL's
    SSE4.2 kernels against whatever this CPU picks (AVX2 / AVX-512): other summation orders and no FMA."""
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default", MKL_ENABLE_INSTRUCTIONS="SSE4_2", ONEDNN_MAX_CPU_ISA="SSE41")
    code = ("import dataclasses, sys; from scripts import micro_clip as mc; "
            f"mc.build(sys.argv[1], dataclasses.replace(mc.Recipe(), steps={REPRO.steps}, batch_size={REPRO.batch_size}))")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "plain.pt")], env=env, check=True,
                   cwd=mc.ROOT, timeout=600)
    assert sha256(str(tmp_path / "plain.pt")) == sha256(repro_built)


def test_cache_is_reused_while_current_and_rebuilt_when_stale(tmp_path, monkeypatch):
    builds = []
    real_build = mc.build
    monkeypatch.setattr(mc, "build", lambda path, recipe: builds.append(recipe) or real_build(path, recipe))
    path = mc.ensure_micro_clip(str(tmp_path), TINY)
    assert path == str(tmp_path / mc.FILE_NAME) and len(builds) == 1
    assert json.loads(open(path + ".json").read())["recipe_hash"] == TINY.digest()
    stamp = os.stat(path).st_mtime_ns

    assert mc.ensure_micro_clip(str(tmp_path), TINY) == path and len(builds) == 1
    assert os.stat(path).st_mtime_ns == stamp

    # Another recipe (or a code version bump) -> another hash -> rebuilt, never reused.
    mc.ensure_micro_clip(str(tmp_path), dataclasses.replace(TINY, steps=4))
    assert len(builds) == 2 and json.loads(open(path + ".json").read())["recipe"]["steps"] == 4
    # Metadata naming another hash, or none at all (a crash between the two writes) -> rebuilt.
    with open(path + ".json", "w") as f:
        json.dump({"recipe_hash": "0" * 16}, f)
    mc.ensure_micro_clip(str(tmp_path), TINY)
    assert len(builds) == 3
    os.remove(path + ".json")
    mc.ensure_micro_clip(str(tmp_path), TINY)
    assert len(builds) == 4 and mc.is_current(path, TINY)
    # A file changed after its build (torch.load would not notice a flipped byte) -> rebuilt.
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 1]))
    assert not mc.is_current(path, TINY)
    mc.ensure_micro_clip(str(tmp_path), TINY)
    assert len(builds) == 5 and mc.is_current(path, TINY)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".part")]  # no temporary file left behind


def test_brightness_splits_the_images_at_their_median_ink():
    pixels = torch.zeros(4, 28, 28, dtype=torch.uint8)
    for i, value in enumerate((40, 200, 90, 250)):
        pixels[i, :10, :10] = value
    pixels[0, 20:, 20:] = 20  # below the ink threshold (25): not counted
    assert mc.brightness_of(pixels).tolist() == [0, 1, 0, 1]


def test_pretraining_crops_leave_the_kept_share_whole_and_crop_the_rest():
    images = torch.rand(64, 28, 28)
    whole = mc.random_resized_crops(images, dataclasses.replace(TINY, crop_p=0.0), torch.Generator().manual_seed(0))
    assert torch.allclose(whole, images, atol=1e-5)
    cropped = mc.random_resized_crops(images, dataclasses.replace(TINY, crop_p=1.0), torch.Generator().manual_seed(0))
    changed = (cropped - images).flatten(1).abs().max(1).values > 0.1
    assert changed.all()
    half = mc.random_resized_crops(images, TINY, torch.Generator().manual_seed(0))
    kept = ((half - images).flatten(1).abs().max(1).values < 1e-5).float().mean().item()
    assert 0.3 < kept < 0.7  # crop_p 0.5
