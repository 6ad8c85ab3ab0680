"""Tiny real-format CLIP checkpoints for tests (no weights can be downloaded here).

    make_tiny_clip_state_dict(vision="resnet"|"vit")  -> OpenAI-format state dict (fp32)
    make_tiny_clip_model(vision=...)                  -> the matching open_clip CLIP (eval)
    save_tiny_clip(path, fmt="state_dict"|"torchscript", vision=...)  -> path
    tiny_clip_file                                    -> pytest fixture: a resnet .pt file

The state dict comes from a small open_clip `CLIP`, so its keys are exactly OpenAI's and
`open_clip.model.build_model_from_openai_state_dict` infers the same architecture back.
Sizes the builder forces: text width 64 (it uses width // 64 heads), vocabulary 49408 and
context 77 (the real tokenizer's), so a file is about 14 MB (7 MB with half=True).
"""
import math
import warnings

import pytest
import torch

TEXT_WIDTH = 64  # smallest width for which the builder's `width // 64` heads is > 0
RESNET_WIDTH = 8  # stem width; the ResNet's attention pool has width * 32 channels
VIT_WIDTH = 64
VIT_PATCH = 16


def _tiny_configs(vision, image_resolution):
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    if vision == "resnet":
        if image_resolution % 32:
            raise ValueError(f"image_resolution {image_resolution} must be a multiple of 32 for vision='resnet'")
        vision_cfg = CLIPVisionCfg(layers=(1, 1, 1, 1), width=RESNET_WIDTH, image_size=image_resolution)
    elif vision == "vit":
        if image_resolution % VIT_PATCH:
            raise ValueError(f"image_resolution {image_resolution} must be a multiple of {VIT_PATCH} for vision='vit'")
        vision_cfg = CLIPVisionCfg(layers=1, width=VIT_WIDTH, patch_size=VIT_PATCH, image_size=image_resolution)
    else:
        raise ValueError(f"vision must be 'resnet' or 'vit', not {vision!r}")
    text_cfg = CLIPTextCfg(context_length=77, vocab_size=49408, width=TEXT_WIDTH, heads=TEXT_WIDTH // 64, layers=1)
    return vision_cfg, text_cfg


def make_tiny_clip_state_dict(vision="resnet", embed_dim=32, image_resolution=32, seed=0):
    """An OpenAI-format CLIP state dict (fp32, CPU) of a tiny model, the same for the same seed."""
    from open_clip.model import CLIP

    vision_cfg, text_cfg = _tiny_configs(vision, image_resolution)
    with torch.random.fork_rng(devices=[]):  # leave the caller's random stream untouched
        torch.manual_seed(seed)
        model = CLIP(embed_dim, vision_cfg=vision_cfg, text_cfg=text_cfg, quick_gelu=True)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        # open_clip initialises norms to 1/0 and zeroes each ResNet block's last BN, which
        # would hide a weight that failed to load; give every constant tensor seeded values.
        for key, value in state.items():
            if not value.is_floating_point() or value.numel() < 2 or value.min() != value.max():
                continue
            if key.endswith("running_var"):
                state[key] = 0.5 + torch.rand_like(value)
            else:
                state[key] = value + 0.1 * torch.randn_like(value)
    state["logit_scale"] = torch.tensor(math.log(1 / 0.07))
    return state


def make_tiny_clip_model(vision="resnet", embed_dim=32, image_resolution=32, seed=0, state_dict=None):
    """The open_clip CLIP (fp32, eval) holding `state_dict` (default: the tiny one for `seed`)."""
    from open_clip.model import CLIP

    vision_cfg, text_cfg = _tiny_configs(vision, image_resolution)
    model = CLIP(embed_dim, vision_cfg=vision_cfg, text_cfg=text_cfg, quick_gelu=True)
    if state_dict is None:
        state_dict = make_tiny_clip_state_dict(vision, embed_dim, image_resolution, seed)
    model.load_state_dict({k: v.float() for k, v in state_dict.items()})
    return model.eval()


def _openai_half(state):
    """Cast weights to fp16 the way OpenAI's release stored them (norms and embeddings stay fp32)."""
    half = {}
    for key, value in state.items():
        is_matrix = value.is_floating_point() and value.dim() >= 2 and "embedding" not in key
        half[key] = value.half() if is_matrix or key.endswith(("text_projection", "visual.proj")) else value
    return half


def save_tiny_clip(path, fmt="state_dict", vision="resnet", embed_dim=32, image_resolution=32, seed=0, half=False):
    """Write a tiny CLIP checkpoint to `path` and return `path`.

    fmt="state_dict": torch.save of the OpenAI-format dict (fp16 matrices when `half`).
    fmt="torchscript": a traced archive, like OpenAI's .pt files, whose
    `torch.jit.load(path).state_dict()` is that dict plus OpenAI's `input_resolution`,
    `context_length` and `vocab_size` entries.
    """
    state = make_tiny_clip_state_dict(vision, embed_dim, image_resolution, seed)
    if fmt == "state_dict":
        torch.save(_openai_half(state) if half else state, str(path))
    elif fmt == "torchscript":
        if half:
            raise ValueError("half=True is only supported for fmt='state_dict'")
        _save_torchscript(make_tiny_clip_model(vision, embed_dim, image_resolution, state_dict=state),
                          image_resolution, path)
    else:
        raise ValueError(f"fmt must be 'state_dict' or 'torchscript', not {fmt!r}")
    return path


def _save_torchscript(model, image_resolution, path):
    # The causal mask is a non-persistent buffer; as a plain attribute the tracer bakes it
    # into the graph instead of listing it in the archive's state_dict.
    mask = model.attn_mask
    del model._buffers["attn_mask"]
    model.attn_mask = mask
    # OpenAI's archives carry these as tensors; open_clip keeps two of them as plain ints.
    for key, value in (("input_resolution", image_resolution), ("context_length", 77), ("vocab_size", 49408)):
        if hasattr(model, key):
            delattr(model, key)
        model.register_buffer(key, torch.tensor(value))
    images = torch.zeros(1, 3, image_resolution, image_resolution)
    tokens = torch.zeros(1, 77, dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated, but OpenAI's format is TorchScript
        traced = torch.jit.trace_module(
            model, {"encode_image": (images,), "encode_text": (tokens,)}, check_trace=False
        )
        torch.jit.save(traced, str(path))


@pytest.fixture
def tiny_clip_file(tmp_path):
    """Path of a tiny ResNet CLIP saved as an OpenAI-format state dict."""
    return save_tiny_clip(tmp_path / "tiny_rn.pt", fmt="state_dict", vision="resnet")
