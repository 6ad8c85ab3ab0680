"""Tests of the `clip` facade: formats, name resolution, cache, download, errors, tokenizer, preprocess.

Every checkpoint is a tiny real-format file from tests/clip_fixtures.py; downloads are served
from local bytes by replacing `clip.weights._open_url`, so nothing touches the network.
"""
import argparse
import hashlib
import io
import os
import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image

import clip
from clip import weights as W
from engine.errors import CheckpointError, UserError

from clip_fixtures import (  # noqa: F401  (tiny_clip_file is a fixture)
    _openai_half,
    make_tiny_clip_model,
    make_tiny_clip_state_dict,
    save_tiny_clip,
    tiny_clip_file,
)

OPENAI_KEYS_EXTRA = {"input_resolution", "context_length", "vocab_size"}


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """No test may reach the network or the user's real cache."""
    monkeypatch.setenv(W.OFFLINE_ENV, "1")
    monkeypatch.setenv(W.CACHE_ENV, str(tmp_path / "default_cache"))

    def no_network(url, timeout):
        raise AssertionError(f"test tried to open {url}")

    monkeypatch.setattr(W, "_open_url", no_network)


def _inputs(resolution=32):
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(3, 3, resolution, resolution, generator=gen)
    tokens = clip.tokenize(["a photo of a cat.", "a photo of a dog.", "itap of a origami bird."])
    return images, tokens


def _assert_same_outputs(model, reference, resolution=32):
    images, tokens = _inputs(resolution)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(images), reference.encode_image(images), rtol=0, atol=1e-6)
        torch.testing.assert_close(model.encode_text(tokens), reference.encode_text(tokens), rtol=0, atol=1e-6)


# ---- fixtures: the files are real OpenAI-format checkpoints ---------------------------------------------

@pytest.mark.parametrize("vision", ["resnet", "vit"])
def test_tiny_state_dict_round_trips_through_open_clip_builder(vision):
    from open_clip.model import build_model_from_openai_state_dict

    state = make_tiny_clip_state_dict(vision)
    assert state["token_embedding.weight"].shape == (49408, 64)
    assert state["positional_embedding"].shape == (77, 64)
    assert state["text_projection"].shape == (64, 32)
    assert ("visual.attnpool.positional_embedding" in state) == (vision == "resnet")
    assert ("visual.proj" in state) == (vision == "vit")
    built = build_model_from_openai_state_dict(dict(state), cast_dtype=None)  # strict load inside
    assert set(built.state_dict()) == set(state)


def test_tiny_state_dict_is_seeded_and_has_no_constant_tensors():
    a, b, c = (make_tiny_clip_state_dict(seed=s) for s in (0, 0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["visual.conv1.weight"], c["visual.conv1.weight"])
    # a zero-initialised BN would make its block a no-op and hide a weight that failed to load
    assert a["visual.layer1.0.bn3.weight"].abs().min() > 0


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_fixture_is_an_archive_with_openai_keys(tmp_path):
    path = save_tiny_clip(tmp_path / "rn.pt", fmt="torchscript", vision="resnet")
    archive = torch.jit.load(str(path))
    assert isinstance(archive, torch.jit.ScriptModule)
    state = archive.state_dict()
    assert set(state) == set(make_tiny_clip_state_dict("resnet")) | OPENAI_KEYS_EXTRA
    assert int(state["input_resolution"]) == 32


# ---- loading files -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["state_dict", "torchscript"])
@pytest.mark.parametrize("vision", ["resnet", "vit"])
def test_load_file_matches_in_memory_model(tmp_path, fmt, vision):
    path = save_tiny_clip(tmp_path / f"{vision}.pt", fmt=fmt, vision=vision)
    model, preprocess = clip.load(str(path))
    assert isinstance(model, clip.model.CLIP) and not model.training  # OpenAI's architecture, ours
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.embed_dim == 32 and model.image_resolution == 32 == model.visual.input_resolution
    for attr in ("visual", "logit_scale", "text_projection", "token_embedding", "positional_embedding",
                 "transformer", "ln_final", "context_length", "dtype"):
        assert hasattr(model, attr), attr
    assert model.transformer.resblocks[0].attn_mask.shape == (77, 77)  # the causal mask sits in the blocks
    _assert_same_outputs(model, make_tiny_clip_model(vision))


@pytest.mark.parametrize("vision, embed_dim, resolution", [("resnet", 48, 64), ("vit", 16, 48)])
def test_architecture_is_inferred_from_the_weights(tmp_path, vision, embed_dim, resolution):
    path = save_tiny_clip(tmp_path / "m.pt", vision=vision, embed_dim=embed_dim, image_resolution=resolution)
    model, preprocess = clip.load(path)
    assert model.embed_dim == embed_dim and model.image_resolution == resolution
    assert preprocess(Image.new("RGB", (90, 70))).shape == (3, resolution, resolution)
    _assert_same_outputs(model, make_tiny_clip_model(vision, embed_dim, resolution), resolution)


def test_fp16_checkpoint_loads_as_fp32(tmp_path):
    # OpenAI's release stores its matrices in fp16; the model must still come back fp32
    path = save_tiny_clip(tmp_path / "half.pt", half=True)
    assert torch.load(path)["visual.conv1.weight"].dtype == torch.float16
    model, _ = clip.load(path)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    half_state = _openai_half(make_tiny_clip_state_dict())
    _assert_same_outputs(model, make_tiny_clip_model(state_dict=half_state))


def test_wrapped_and_prefixed_state_dict_loads(tmp_path):
    state = make_tiny_clip_state_dict()
    path = tmp_path / "wrapped.pt"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in state.items()}}, path)
    model, _ = clip.load(path)
    _assert_same_outputs(model, make_tiny_clip_model())


def test_tiny_clip_file_fixture(tiny_clip_file):
    model, _ = clip.load(tiny_clip_file)
    assert hasattr(model.visual, "attnpool")  # the fixture is a ResNet


# ---- names, cache dir, explicit weights --------------------------------------------------------------

def test_load_by_name_from_cache_dir(tmp_path):
    save_tiny_clip(tmp_path / "RN50.pt")
    save_tiny_clip(tmp_path / "ViT-B-32.pt", vision="vit")
    rn, _ = clip.load("RN50", cache_dir=tmp_path)
    vit, _ = clip.load("ViT-B/32", cache_dir=str(tmp_path))
    assert hasattr(rn.visual, "attnpool") and not hasattr(vit.visual, "attnpool")
    _assert_same_outputs(vit, make_tiny_clip_model("vit"))
    # open_clip's spelling of an OpenAI model reads the same cached file
    same, _ = clip.load("RN50/openai", cache_dir=tmp_path)
    _assert_same_outputs(same, rn)


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    folder = tmp_path / "env_cache"
    folder.mkdir()
    save_tiny_clip(folder / "ViT-L-14-336px.pt", vision="vit")
    monkeypatch.setenv(W.CACHE_ENV, str(folder))
    model, _ = clip.load("ViT-L/14@336px")
    assert model.image_resolution == 32
    assert W.cached_file_path("RN101") == str(folder / "RN101.pt")


def test_weights_argument_overrides_name(tmp_path, tiny_clip_file):
    # the cache holds a ViT for the name, the explicit file is a ResNet: the file wins
    save_tiny_clip(tmp_path / "ViT-B-16.pt", vision="vit")
    model, _ = clip.load("ViT-B/16", cache_dir=tmp_path, weights=str(tiny_clip_file))
    assert hasattr(model.visual, "attnpool")


def test_local_weights_path_names_the_file_load_reads(tmp_path, tiny_clip_file):
    assert clip.local_weights_path("RN50", cache_dir=tmp_path) is None  # not cached, no download
    save_tiny_clip(tmp_path / "RN50.pt")
    assert clip.local_weights_path("RN50", cache_dir=tmp_path) == str(tmp_path / "RN50.pt")
    assert clip.local_weights_path("RN50/openai", cache_dir=tmp_path) == str(tmp_path / "RN50.pt")
    assert clip.local_weights_path("RN50", weights=tiny_clip_file) == str(tiny_clip_file)
    assert clip.local_weights_path(str(tiny_clip_file)) == str(tiny_clip_file)


def test_missing_explicit_weights_file(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match=f"CLIP weights file {missing} does not exist"):
        clip.load("RN50", weights=str(missing))


def test_missing_weights_offline_names_path_and_url(tmp_path):
    expected = tmp_path / "RN50.pt"
    with pytest.raises(CheckpointError) as info:
        clip.load("RN50", cache_dir=tmp_path)
    assert str(info.value) == (
        f"CLIP weights for RN50 not found at {expected} and could not be downloaded "
        f"(TASKRES_OFFLINE=1 forbids downloads); download {W.OPENAI_URLS['RN50']} to that path, "
        f"or pass MODEL.BACKBONE.WEIGHTS /path/to/file."
    )
    assert not expected.exists()


def test_missing_weights_without_network(tmp_path, monkeypatch):
    monkeypatch.delenv(W.OFFLINE_ENV)

    def unreachable(url, timeout):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(W, "_open_url", unreachable)
    with pytest.raises(CheckpointError) as info:
        clip.load("ViT-B/16", cache_dir=tmp_path)
    message = str(info.value)
    assert f"not found at {tmp_path / 'ViT-B-16.pt'} and could not be downloaded" in message
    assert "Temporary failure in name resolution" in message and W.OPENAI_URLS["ViT-B/16"] in message
    assert os.listdir(tmp_path) == []  # no partial file left behind


@pytest.mark.parametrize("name, suggestion", [("RN51", "RN50"), ("rn50", "RN50"), ("ViT-B/33", "ViT-B/32"),
                                              ("resnet", None)])
def test_unknown_name_lists_valid_names(name, suggestion):
    with pytest.raises(UserError) as info:
        clip.load(name)
    message = str(info.value)
    assert message.startswith(f"Unknown CLIP model {name!r}")
    assert all(valid in message for valid in clip.available_models())
    assert (f"did you mean {suggestion!r}" in message) if suggestion else "did you mean" not in message


def test_unknown_open_clip_tag_lists_tags():
    with pytest.raises(UserError, match="no pretrained tag 'no_such_tag'; valid tags: .*laion2b_s34b_b79k"):
        clip.load("ViT-B-32/no_such_tag")


def test_missing_path_like_name(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        clip.load(str(tmp_path / "missing.pt"))


def test_available_models_are_openai_names():
    assert clip.available_models() == ["RN50", "RN101", "RN50x4", "RN50x16", "RN50x64",
                                       "ViT-B/32", "ViT-B/16", "ViT-L/14", "ViT-L/14@336px"]
    for name, url in W.OPENAI_URLS.items():
        assert url.startswith("https://openaipublic.azureedge.net/clip/models/")
        assert len(W.expected_sha256(url)) == 64


# ---- damaged files -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["state_dict", "torchscript"])
def test_truncated_file_gives_clean_error(tmp_path, fmt):
    path = save_tiny_clip(tmp_path / "RN50.pt", fmt=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        clip.load("RN50", cache_dir=tmp_path)
    message = str(info.value)
    assert message.startswith(f"CLIP weights file {path} is corrupt or truncated")
    assert message.endswith("delete it and download it again.")
    assert "\n" not in message


@pytest.mark.parametrize("content", [b"", b"<html>404 not found</html>" * 20])
def test_garbage_file_gives_clean_error(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="is corrupt or truncated"):
        clip.load(path)


def test_pickle_of_python_objects_is_not_executed(tmp_path):
    path = tmp_path / "with_objects.pt"
    torch.save({"state_dict": make_tiny_clip_state_dict(), "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(CheckpointError, match="holds Python objects besides tensors"):
        clip.load(path)


def test_non_clip_state_dict_is_rejected(tmp_path):
    path = tmp_path / "linear.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"is not an OpenAI-format CLIP checkpoint \(missing token_embedding"):
        clip.load(path)


def test_mismatched_shapes_are_rejected(tmp_path):
    state = make_tiny_clip_state_dict()
    state["ln_final.bias"] = torch.zeros(3)
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="does not describe a CLIP model of OpenAI's architecture"):
        clip.load(path)


# ---- download ----------------------------------------------------------------------------------------

class _Served(io.BytesIO):
    """A stand-in for urlopen's response: bytes with a Content-Length header."""

    def __init__(self, data):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def _serve(monkeypatch, data, name="RN50"):
    """Point `name`'s URL at a fake location whose embedded sha256 is that of `data`... or not."""
    opened = []

    def opener(url, timeout):
        opened.append(url)
        return _Served(data)

    monkeypatch.delenv(W.OFFLINE_ENV)
    monkeypatch.setattr(W, "_open_url", opener)
    return opened


def test_download_checks_sha256_and_stores_file(tmp_path, monkeypatch, tiny_clip_file):
    data = tiny_clip_file.read_bytes()
    url = f"https://example.invalid/clip/models/{hashlib.sha256(data).hexdigest()}/RN50.pt"
    monkeypatch.setitem(W.OPENAI_URLS, "RN50", url)
    opened = _serve(monkeypatch, data)
    cache = tmp_path / "cache"
    model, _ = clip.load("RN50", cache_dir=cache)
    assert opened == [url]
    assert (cache / "RN50.pt").read_bytes() == data
    assert os.listdir(cache) == ["RN50.pt"]  # the temporary file was renamed, not copied
    _assert_same_outputs(model, make_tiny_clip_model())
    clip.load("RN50", cache_dir=cache)  # second time: read from the cache
    assert len(opened) == 1


def test_download_with_wrong_checksum_leaves_nothing(tmp_path, monkeypatch, tiny_clip_file):
    data = tiny_clip_file.read_bytes()
    url = f"https://example.invalid/clip/models/{hashlib.sha256(b'other').hexdigest()}/RN50.pt"
    monkeypatch.setitem(W.OPENAI_URLS, "RN50", url)
    _serve(monkeypatch, data)
    cache = tmp_path / "cache"
    with pytest.raises(W.ChecksumError, match=f"downloaded from {url} has sha256 {hashlib.sha256(data).hexdigest()}"):
        clip.load("RN50", cache_dir=cache)
    assert os.listdir(cache) == []


def test_interrupted_download_leaves_nothing(tmp_path, monkeypatch):
    class Dropped(_Served):
        def read(self, size=-1):
            if self.tell() > 0:
                raise ConnectionResetError("connection reset by peer")
            return super().read(10)

    monkeypatch.delenv(W.OFFLINE_ENV)
    monkeypatch.setattr(W, "_open_url", lambda url, timeout: Dropped(b"x" * 100))
    with pytest.raises(CheckpointError, match=r"could not be downloaded \(connection reset by peer\)"):
        clip.load("RN101", cache_dir=tmp_path)
    assert os.listdir(tmp_path) == []


# ---- open_clip ARCH/TAG names ------------------------------------------------------------------------

def test_open_clip_tag_offline_fails_cleanly(tmp_path):
    with pytest.raises(CheckpointError) as info:
        clip.load("ViT-B-32/laion2b_s34b_b79k", cache_dir=tmp_path)
    message = str(info.value)
    assert message.startswith(f"open_clip weights for ViT-B-32/laion2b_s34b_b79k are not in {tmp_path}")
    assert "MODEL.BACKBONE.WEIGHTS" in message


def test_open_clip_download_failure_is_wrapped(tmp_path, monkeypatch):
    import open_clip

    def fail(cfg, cache_dir=None):
        raise RuntimeError("Failed to download file (open_clip_pytorch_model.bin): offline")

    monkeypatch.delenv(W.OFFLINE_ENV)
    monkeypatch.setattr(open_clip, "download_pretrained", fail)
    with pytest.raises(CheckpointError, match=r"could not be downloaded \(Failed to download file"):
        clip.load("ViT-B-32/laion2b_s34b_b79k", cache_dir=tmp_path)


def test_open_clip_custom_text_tower_is_refused():
    with pytest.raises(UserError, match="custom text tower"):
        clip.load("xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k")


@pytest.fixture
def tiny_open_clip_arch(monkeypatch):
    """Register a tiny architecture "TinyRN" with tag "test" in open_clip's tables (undone after)."""
    import open_clip.factory
    import open_clip.pretrained

    cfg = {"embed_dim": 32, "quick_gelu": True,
           "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "patch_size": None},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1}}
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "TinyRN", cfg)
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, "TinyRN", {"test": {"hf_hub": "none/none/", "quick_gelu": True}})
    return "TinyRN/test"


def test_open_clip_tag_with_weights_file(tiny_open_clip_arch, tiny_clip_file):
    model, preprocess = clip.load(tiny_open_clip_arch, weights=tiny_clip_file)
    assert isinstance(model, clip.model.CLIP)  # a plain open_clip config is built with OpenAI's classes
    assert model.embed_dim == 32 and model.image_resolution == 32
    _assert_same_outputs(model, make_tiny_clip_model())


def test_open_clip_config_our_classes_cannot_express_loads_open_clip_model(monkeypatch, tmp_path):
    import open_clip.factory
    import open_clip.pretrained
    from open_clip.model import CLIP as OpenClipCLIP

    cfg = {"embed_dim": 32, "quick_gelu": True,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16, "ls_init_value": 0.1},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1}}
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "TinyLS", cfg)
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, "TinyLS", {"test": {"hf_hub": "none/none/", "quick_gelu": True}})
    torch.manual_seed(0)
    reference = open_clip.create_model("TinyLS", pretrained=None).eval()  # layer scale: keys OpenAI's lack
    path = tmp_path / "ls.pt"
    torch.save(reference.state_dict(), path)
    model, _ = clip.load("TinyLS/test", weights=path)
    assert isinstance(model, OpenClipCLIP) and not isinstance(model, clip.model.CLIP)
    assert model.embed_dim == 32 and model.visual.input_resolution == 32 == model.image_resolution
    _assert_same_outputs(model, reference)


def test_open_clip_tag_with_wrong_weights_file(tiny_open_clip_arch, tmp_path):
    vit = save_tiny_clip(tmp_path / "vit.pt", vision="vit")
    with pytest.raises(CheckpointError, match=f"CLIP weights file {vit} does not fit open_clip architecture TinyRN"):
        clip.load(tiny_open_clip_arch, weights=vit)


# ---- tokenizer and preprocess ------------------------------------------------------------------------

def test_tokenize_matches_openai_ids():
    tokens = clip.tokenize("a photo of a cat.")
    assert tokens.dtype == torch.long and tokens.shape == (1, 77)
    assert tokens[0, :8].tolist() == [49406, 320, 1125, 539, 320, 2368, 269, 49407]
    assert tokens[0, 8:].eq(0).all()
    batch = clip.tokenize(["a photo of a cat.", "A  Photo of a CAT."])
    assert torch.equal(batch[0], batch[1])  # lower-cased, whitespace-cleaned like OpenAI's


def test_tokenize_too_long():
    text = "cat " * 100
    with pytest.raises(UserError, match="more than the context length 77; .*truncate=True"):
        clip.tokenize(text)
    tokens = clip.tokenize([text], truncate=True)
    assert tokens.shape == (1, 77) and tokens[0, 0] == 49406 and tokens[0, -1] == 49407


def test_preprocess_shape_and_normalisation(tiny_clip_file):
    _, preprocess = clip.load(tiny_clip_file)
    colour = (200, 100, 50)
    out = preprocess(Image.new("RGB", (80, 50), colour))
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    mean, std = torch.tensor(clip.loader.CLIP_MEAN), torch.tensor(clip.loader.CLIP_STD)
    expected = (torch.tensor(colour) / 255 - mean) / std
    torch.testing.assert_close(out.mean(dim=(1, 2)), expected, atol=1e-5, rtol=0)
    # greyscale and RGBA inputs come out as 3 channels
    assert preprocess(Image.new("L", (40, 40), 128)).shape == (3, 32, 32)
    assert preprocess(Image.fromarray(np.zeros((33, 70, 4), dtype=np.uint8), "RGBA")).shape == (3, 32, 32)
    resize = preprocess.transforms[0]
    assert resize.size == 32 and resize.interpolation.value == "bicubic"
