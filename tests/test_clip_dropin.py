"""`clip/` as a drop-in for OpenAI's `clip` package, written the way CoOp-family trainers use it.

The classes below follow CoOp's `trainers/coop.py` idiom (attribute access on the loaded model,
sequence-first transformer call, EOT gather); they are the test's own code. Every model is a
tiny real-format checkpoint from tests/clip_fixtures.py.
"""
import warnings

import pytest
import torch
from torch import nn

import clip as clip_package
from clip import clip
from clip import weights as W
from clip.model import (CLIP, LayerNorm, ModifiedResNet, QuickGELU, ResidualAttentionBlock, Transformer,
                        VisionTransformer, build_model, convert_weights)
from clip.simple_tokenizer import SimpleTokenizer
from engine.errors import CheckpointError

from clip_fixtures import _openai_half, make_tiny_clip_model, make_tiny_clip_state_dict, save_tiny_clip

PROMPTS = ["a photo of a cat.", "a photo of a golden retriever.", "itap of a origami bird.",
           "a centered satellite photo of Annual Crop Land.", "x"]


class TextEncoder(nn.Module):
    """CoOp's text encoder: prompt embeddings -> features, through the model's own modules."""

    def __init__(self, clip_model):
        super().__init__()
        self.transformer = clip_model.transformer
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.dtype = clip_model.dtype

    def forward(self, prompts, tokenized_prompts):
        x = prompts + self.positional_embedding.type(self.dtype)
        x = x.permute(1, 0, 2)  # NLD -> LND
        x = self.transformer(x)
        x = x.permute(1, 0, 2)
        x = self.ln_final(x).type(self.dtype)
        return x[torch.arange(x.shape[0]), tokenized_prompts.argmax(dim=-1)] @ self.text_projection


def _vit():
    return clip.build_model(_openai_half(make_tiny_clip_state_dict("vit"))).float()


def _embed(model, tokens):
    with torch.no_grad():
        return model.token_embedding(tokens).type(model.dtype)


# ---- the module layout CoOp imports ------------------------------------------------------------------

def test_openai_names_exist():
    for name in ("load", "tokenize", "available_models", "_MODELS", "_download", "_transform", "build_model"):
        assert hasattr(clip, name), name
    assert clip._MODELS is W.OPENAI_URLS and clip.available_models() == list(W.OPENAI_URLS)
    assert clip_package.clip is clip and clip_package.load is clip.load
    for module in (ModifiedResNet, VisionTransformer, Transformer, ResidualAttentionBlock, LayerNorm, QuickGELU):
        assert issubclass(module, nn.Module)
    assert clip._transform(48).transforms[1].size == (48, 48)


# ---- CoOp's text encoder == encode_text, batch-independent ---------------------------------------------

@pytest.mark.parametrize("vision", ["vit", "resnet"])
def test_coop_text_encoder_equals_encode_text(vision):
    model = clip.build_model(_openai_half(make_tiny_clip_state_dict(vision))).float()
    tokens = clip.tokenize(PROMPTS)
    with torch.no_grad():
        coop = TextEncoder(model)(_embed(model, tokens), tokens)
        reference = model.encode_text(tokens)
    torch.testing.assert_close(coop, reference, rtol=0, atol=1e-5)
    cosine = torch.nn.functional.cosine_similarity(coop, reference)
    assert cosine.min() > 0.99999  # issue 9 measured 0.17 / 0.26 / -0.09 here


def test_coop_text_encoder_is_batch_independent():
    model = _vit()
    encoder = TextEncoder(model)
    tokens = clip.tokenize(PROMPTS)
    with torch.no_grad():
        together = encoder(_embed(model, tokens), tokens)
        for i in range(len(PROMPTS)):
            alone = encoder(_embed(model, tokens[i:i + 1]), tokens[i:i + 1])
            torch.testing.assert_close(alone[0], together[i], rtol=0, atol=1e-5)


def test_coop_prompt_with_learned_context_equals_the_phrase():
    """CoOp with CTX_INIT: [SOS] + ctx vectors + class tokens = the embedded sentence, so features match."""
    model = _vit()
    ctx_init, names = "a photo of a", ["cat", "golden retriever"]
    n_ctx = len(ctx_init.split(" "))
    ctx = _embed(model, clip.tokenize(ctx_init))[0, 1:1 + n_ctx, :]
    tokens = torch.cat([clip.tokenize(f"{ctx_init} {name}.") for name in names])
    embedding = _embed(model, tokens)
    prompts = torch.cat([embedding[:, :1], ctx.expand(len(names), -1, -1), embedding[:, 1 + n_ctx:]], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(TextEncoder(model)(prompts, tokens), model.encode_text(tokens), rtol=0, atol=1e-5)


def test_shorter_context_uses_the_leading_block_of_the_causal_mask():
    """MVLPT tokenizes to the longest prompt's length and slices the positional embedding."""
    model = _vit()
    tokens = clip.tokenize(PROMPTS)
    short = clip.tokenize(PROMPTS, context_length=20)
    with torch.no_grad():
        x = _embed(model, short) + model.positional_embedding[:20].type(model.dtype)
        x = model.ln_final(model.transformer(x.permute(1, 0, 2)).permute(1, 0, 2))
        features = x[torch.arange(len(PROMPTS)), short.argmax(dim=-1)] @ model.text_projection
        torch.testing.assert_close(features, model.encode_text(tokens), rtol=0, atol=1e-5)
    assert model.transformer.resblocks[0].attn_mask.shape == (77, 77)  # sliced per call, not replaced


# ---- build_model / convert_weights / dtypes ------------------------------------------------------------

@pytest.mark.parametrize("vision", ["vit", "resnet"])
def test_build_model_round_trips_an_openai_state_dict(vision):
    state = _openai_half(make_tiny_clip_state_dict(vision))
    state_with_archive_keys = dict(state, input_resolution=torch.tensor(32), context_length=torch.tensor(77),
                                   vocab_size=torch.tensor(49408))
    model = build_model(state_with_archive_keys)
    assert "input_resolution" in state_with_archive_keys  # the caller's dict is left alone
    assert isinstance(model, CLIP) and not model.training
    assert set(model.state_dict()) == set(state)  # strict: no key missing or extra
    for key, value in model.state_dict().items():  # each value as stored, in the parameter's dtype
        assert torch.equal(value, state[key].to(value.dtype)), key
    assert model.visual.input_resolution == 32 and model.context_length == 77
    assert model.visual.output_dim == 32 and model.vocab_size == 49408
    expected_visual = VisionTransformer if vision == "vit" else ModifiedResNet
    assert isinstance(model.visual, expected_visual)


def test_build_model_converts_the_matrices_to_fp16_and_keeps_norms_fp32():
    model = build_model(make_tiny_clip_state_dict("vit"))
    assert model.dtype == torch.float16
    half = [model.visual.conv1.weight, model.visual.proj, model.text_projection,
            model.transformer.resblocks[0].attn.in_proj_weight, model.transformer.resblocks[0].attn.out_proj.weight,
            model.transformer.resblocks[0].mlp.c_fc.weight, model.transformer.resblocks[0].mlp.c_fc.bias]
    single = [model.ln_final.weight, model.visual.ln_pre.weight, model.token_embedding.weight,
              model.positional_embedding, model.visual.class_embedding, model.logit_scale]
    assert all(p.dtype == torch.float16 for p in half)
    assert all(p.dtype == torch.float32 for p in single)
    resnet = convert_weights(clip.build_model(make_tiny_clip_state_dict("resnet")).float())
    assert resnet.visual.attnpool.c_proj.weight.dtype == resnet.visual.layer1[0].conv1.weight.dtype == torch.float16
    assert resnet.visual.bn1.weight.dtype == torch.float32


@pytest.mark.parametrize("vision", ["vit", "resnet"])
def test_fp16_model_runs_and_agrees_with_fp32(vision):
    """The fp16 model (CoCoOp's default PREC) runs with fp32 norms; LayerNorm computes in fp32."""
    state = _openai_half(make_tiny_clip_state_dict(vision))
    half, single = build_model(state), build_model(state).float()
    tokens, images = clip.tokenize(PROMPTS), torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        text = half.encode_text(tokens)
        image = half.encode_image(images)
        assert text.dtype == image.dtype == torch.float16
        torch.testing.assert_close(text.float(), single.encode_text(tokens), rtol=0, atol=2e-2)
        torch.testing.assert_close(image.float(), single.encode_image(images), rtol=0, atol=2e-2)
        # every LayerNorm of both towers computes in fp32 (inputs, weight and bias), returns fp16
        seen, layer_norm = [], torch.nn.functional.layer_norm

        def recording(x, shape, weight=None, bias=None, eps=1e-5):
            seen.append((x.dtype, getattr(weight, "dtype", None), getattr(bias, "dtype", None)))
            return layer_norm(x, shape, weight, bias, eps)

        torch.nn.functional.layer_norm = recording
        try:
            half.encode_text(tokens)
            half.encode_image(images)
        finally:
            torch.nn.functional.layer_norm = layer_norm
        norms = [m for m in half.modules() if isinstance(m, torch.nn.LayerNorm)]
        assert norms and len(seen) >= len(norms)  # each ran at least once
        assert set(seen) == {(torch.float32, torch.float32, torch.float32)}
        x = torch.randn(3, half.ln_final.normalized_shape[0], generator=torch.Generator().manual_seed(1)).half()
        out = half.ln_final(x)
        expected = layer_norm(x.float(), half.ln_final.normalized_shape, half.ln_final.weight.float(),
                              half.ln_final.bias.float(), half.ln_final.eps).half()
        assert out.dtype == torch.float16 and torch.equal(out, expected)


def test_load_on_cpu_is_fp32_with_openai_attributes(tmp_path):
    path = save_tiny_clip(tmp_path / "vit.pt", vision="vit")
    model, preprocess = clip.load(str(path), device="cpu")
    assert isinstance(model, CLIP) and model.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.visual.input_resolution == 32 and model.visual.conv1.weight.shape[-1] == 16
    for attr in ("class_embedding", "positional_embedding", "ln_pre", "transformer", "ln_post", "proj"):
        assert hasattr(model.visual, attr), attr
    assert model.visual.transformer.layers == 1 and model.transformer.width == 64


def test_load_jit_true_warns_and_returns_the_eager_model(tmp_path):
    path = save_tiny_clip(tmp_path / "rn.pt")
    with pytest.warns(UserWarning, match=r"jit=True\) is not supported"):
        model, _ = clip.load(str(path), device="cpu", jit=True)
    assert isinstance(model, CLIP)


def test_forward_returns_both_logit_matrices():
    model = _vit()
    images, tokens = torch.randn(2, 3, 32, 32), clip.tokenize(PROMPTS[:3])
    with torch.no_grad():
        per_image, per_text = model(images, tokens)
        img = nn.functional.normalize(model.encode_image(images), dim=-1)
        txt = nn.functional.normalize(model.encode_text(tokens), dim=-1)
        torch.testing.assert_close(per_image, model.logit_scale.exp() * img @ txt.t())
    assert per_image.shape == (2, 3) and torch.equal(per_text, per_image.t())


# ---- parity with open_clip (the engine before this package existed) -----------------------------------

@pytest.mark.parametrize("vision", ["vit", "resnet"])
def test_features_equal_open_clip_on_its_own_state_dict(vision):
    reference = make_tiny_clip_model(vision)  # open_clip's CLIP
    ours = clip_package.loader.build_fp32_model(reference.state_dict())
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    tokens = clip.tokenize(PROMPTS)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode_image(images), reference.encode_image(images), rtol=0, atol=1e-5)
        torch.testing.assert_close(ours.encode_text(tokens), reference.encode_text(tokens), rtol=0, atol=1e-5)


def test_open_clip_gelu_vit_config_builds_our_model_with_its_activation():
    """A non-OpenAI open_clip ViT (nn.GELU, heads from head_width) loads into our class."""
    from open_clip.model import CLIP as OpenClipCLIP

    cfg = {"embed_dim": 16,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}}
    torch.manual_seed(0)
    reference = OpenClipCLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"]).eval()
    ours = CLIP(**clip_package.loader.clip_kwargs_from_open_clip(cfg)).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    assert isinstance(ours.transformer.resblocks[0].mlp.gelu, nn.GELU)
    assert ours.visual.transformer.resblocks[0].attn.num_heads == 2
    images, tokens = torch.randn(2, 3, 32, 32), clip.tokenize(PROMPTS)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode_image(images), reference.encode_image(images), rtol=0, atol=1e-5)
        torch.testing.assert_close(ours.encode_text(tokens), reference.encode_text(tokens), rtol=0, atol=1e-5)
    assert clip_package.loader.clip_kwargs_from_open_clip(dict(cfg, custom_text=True)) is None


def test_tiny_widths_get_one_head():
    """Micro-CLIPs narrower than OpenAI's 64-channel heads still build (one head), as the rule width // 64 gives."""
    model = CLIP(16, 32, 1, 32, 16, 77, 49408, 32, 1, 1)
    state = {k: v for k, v in model.state_dict().items()}
    rebuilt = build_model(state)
    assert rebuilt.visual.transformer.resblocks[0].attn.num_heads == 1
    assert rebuilt.transformer.resblocks[0].attn.num_heads == 1


# ---- tokenizer ----------------------------------------------------------------------------------------

def test_simple_tokenizer_ids_match_tokenize_and_open_clip():
    from open_clip.tokenizer import SimpleTokenizer as OpenClipTokenizer

    ours, theirs = SimpleTokenizer(), OpenClipTokenizer()
    texts = PROMPTS + ["A  Photo of a CAT.", "naïve café &amp; crème brûlée 1234", "don't we'll they're",
                       "emoji 🙂 and 日本語", "Herbaceous_Vegetation", ""]
    sot, eot = ours.encoder["<|startoftext|>"], ours.encoder["<|endoftext|>"]
    assert (sot, eot) == (49406, 49407) and len(ours.encoder) == 49408
    for text in texts:
        ids = ours.encode(text)
        assert ids == theirs.encode(text), text
        assert clip.tokenize(text)[0, :len(ids) + 2].tolist() == [sot] + ids + [eot]
        assert ours.decode(ids) == theirs.decode(ids)
    assert ours.decode(ours.encode("a photo of a cat.")) == "a photo of a cat . "


# ---- CoOp's load_clip_to_cpu, verbatim in spirit -------------------------------------------------------

@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("fmt", ["state_dict", "torchscript"])
def test_coop_load_clip_to_cpu(tmp_path, monkeypatch, fmt):
    monkeypatch.setenv(W.CACHE_ENV, str(tmp_path))
    save_tiny_clip(tmp_path / "ViT-B-32.pt", fmt=fmt, vision="vit")
    model_path = clip._download(clip._MODELS["ViT-B/32"])
    assert model_path == str(tmp_path / "ViT-B-32.pt")
    try:
        model = torch.jit.load(model_path, map_location="cpu").eval()
        state_dict = None
    except RuntimeError:
        state_dict = torch.load(model_path, map_location="cpu")
    model = clip.build_model(state_dict or model.state_dict())
    assert model.dtype == torch.float16  # CoOp then calls .float() for fp32/amp
    model.float()
    # open_clip's model holding the weights as OpenAI's build_model rounds them (fp16 matrices and biases)
    dtypes = {k: v.dtype for k, v in build_model(make_tiny_clip_state_dict("vit")).state_dict().items()}
    rounded = {k: v.to(dtypes[k]) for k, v in make_tiny_clip_state_dict("vit").items()}
    reference = make_tiny_clip_model("vit", state_dict=rounded)
    tokens = clip.tokenize(PROMPTS)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(tokens), reference.encode_text(tokens), rtol=0, atol=1e-5)


def test_download_offline_names_path_and_url(tmp_path):
    url = clip._MODELS["RN50"]
    with pytest.raises(CheckpointError, match=f"CLIP weights for RN50 not found at {tmp_path / 'RN50.pt'}"):
        clip._download(url, str(tmp_path))


# ---- untrained backbone: the same class, seeded ---------------------------------------------------------

@pytest.fixture
def tiny_arch(monkeypatch):
    import open_clip.factory

    cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1}}
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "TinyViT", cfg)
    return "TinyViT"


def test_untrained_backbone_is_our_class_and_deterministic(tiny_arch):
    from trainers.clip_trainer import build_untrained_clip

    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_untrained_clip(tiny_arch, torch.device("cpu"))
    assert torch.equal(torch.rand(1), before)  # the caller's random stream is untouched
    b = build_untrained_clip(tiny_arch, torch.device("cpu"))
    assert isinstance(a, CLIP) and a.dtype == torch.float32 and not a.training
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    tokens = clip.tokenize(PROMPTS[:2])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(TextEncoder(a)(_embed(a, tokens), tokens), a.encode_text(tokens), rtol=0, atol=1e-5)


# ---- the repo's own text features over this model --------------------------------------------------------

def test_prompt_features_with_replaced_or_removed_projection():
    """What TaskRes' enhanced base and the StrongBase producer ask of the text side."""
    from trainers.text_features import prompt_features

    model = _vit()
    names, templates = ["cat", "dog"], ["a photo of a {}.", "art of the {}."]
    tokens = clip.tokenize([t.format(c) for t in templates for c in names])
    with torch.no_grad():
        projected = model.encode_text(tokens)
        model.text_projection, original = None, model.text_projection
        pre = model.encode_text(tokens)
        model.text_projection = original
    assert pre.shape == (4, 64)
    torch.testing.assert_close(prompt_features(model, names, templates), projected.view(2, 2, -1))
    torch.testing.assert_close(prompt_features(model, names, templates, projection=False), pre.view(2, 2, -1))
    other = torch.randn(64, 32)
    torch.testing.assert_close(prompt_features(model, names, templates, projection=other), (pre @ other).view(2, 2, -1))
    assert model.text_projection is original  # restored
