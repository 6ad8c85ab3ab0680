"""scripts/micro_clip.py: the demo's micro-CLIP, built on a reduced recipe (a few steps).

What the demo relies on: the file is an OpenAI-format checkpoint `clip.load` reads, the model it
gives computes what pretraining computed (cheap 28 px path and short text = the standard 224 px /
77-token path), a seed gives the same weights, and a cache built by another recipe is rebuilt.
"""
import dataclasses
import json
import os

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
    state = read(built)
    for key in ("visual.conv1.weight", "visual.class_embedding", "visual.positional_embedding", "visual.ln_pre.weight",
                "visual.transformer.resblocks.1.attn.in_proj_weight", "visual.transformer.resblocks.1.mlp.c_proj.bias",
                "visual.ln_post.bias", "visual.proj", "token_embedding.weight", "positional_embedding",
                "transformer.resblocks.0.attn.out_proj.weight", "ln_final.weight", "text_projection", "logit_scale"):
        assert key in state, key
    assert not any(k.startswith("visual.transformer.resblocks.2.") or k.startswith("transformer.resblocks.1.") for k in state)
    assert {v.dtype for v in state.values()} == {torch.float16}  # as OpenAI ships its weights
    assert state["visual.conv1.weight"].shape == (64, 3, 32, 32)
    assert state["visual.positional_embedding"].shape == (50, 64)  # 7 x 7 patches + class token: 224 px
    assert state["token_embedding.weight"].shape == (49408, 64) and state["positional_embedding"].shape == (77, 64)

    model, _ = clip.load(built)  # strict load: every key used, none missing
    assert (model.embed_dim, model.image_resolution) == (64, 224)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v.float()) for k, v in state.items())


def test_standard_path_computes_what_pretraining_computed(built, tmp_path):
    model, preprocess = clip.load(built)
    micro = mc.MicroCLIP(TINY)
    micro.load_state_dict({k: v.float() for k, v in read(built).items()})
    images, labels = mc.load_test_images()
    pixels = []
    for i in range(6):  # through PNG files, as the demo's dataset stores them
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.round(images[i].numpy() * 255).astype(np.uint8)).save(path)
        pixels.append(preprocess(Image.open(path)))
    with torch.no_grad():
        standard = model.encode_image(torch.stack(pixels))
        cheap = mc.encode_small_images(micro, images[:6], TINY)
        cosine = torch.nn.functional.cosine_similarity(standard, cheap)
        assert cosine.min() > 0.999, cosine
        assert torch.allclose(standard.norm(dim=-1), cheap.norm(dim=-1), rtol=0.01)

        prompts = clip.tokenize(["a photo of a dark sneaker.", "a bag.", "a picture of a bright T-shirt or top."])
        short = prompts[:, : int((prompts > 0).sum(1).max())]
        assert torch.allclose(model.encode_text(prompts), micro.encode_text(short), atol=1e-5)


def test_prompt_features_have_the_recipes_norm(built):
    micro = mc.MicroCLIP(TINY)
    micro.load_state_dict({k: v.float() for k, v in read(built).items()})
    norms = mc.prompt_features(micro, fm.CLASSNAMES).norm(dim=-1)
    assert abs(norms.mean().item() - TINY.text_feature_norm) < 0.01  # fp16 rounding only


def test_same_seed_same_weights_other_seed_other_weights(built, tmp_path):
    again = read(mc.build(str(tmp_path / "again.pt"), TINY))
    first = read(built)
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    other = read(mc.build(str(tmp_path / "other.pt"), dataclasses.replace(TINY, seed=2)))
    assert not torch.equal(first["visual.conv1.weight"], other["visual.conv1.weight"])


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
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".part")]  # no temporary file left behind


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
