"""`clip.load`: turn a model name or a weights file into a CLIP model + preprocess.

Names resolve in one place (`resolve_name`):

    "RN50", "ViT-B/16", ...           OpenAI's models; weights from the cache or downloaded
    "RN50/openai", "ViT-B-16/openai"  the same, spelled the open_clip way
    "ViT-B-32/laion2b_s34b_b79k"      an open_clip architecture with a pretrained tag
    "/path/to/file.pt"                any OpenAI-format checkpoint (state dict or TorchScript archive)

The model is `clip.model.CLIP` (OpenAI's architecture and attribute names). For OpenAI names and
files the architecture is inferred from the weights as OpenAI's `build_model` does, so a small
test checkpoint stored as RN50.pt gives a small model. For open_clip tags it comes from
open_clip's config; a config our CLIP cannot express (custom blocks, pooling, towers) gives
open_clip's own model instead, with `embed_dim`, `image_resolution`, `visual.input_resolution`.
Dtypes follow OpenAI's `load`: fp16 matrices (`convert_weights`) on an accelerator, fp32 on CPU.
"""
import difflib
import logging
import os
import warnings

import torch
from torchvision import transforms as T

from engine.errors import CheckpointError, UserError

from . import weights as W
from .model import CLIP, QuickGELU, architecture_from_state_dict, convert_weights

logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Keys every OpenAI-layout CLIP state dict has, whatever its vision tower.
_REQUIRED_TEXT_KEYS = ("token_embedding.weight", "positional_embedding", "text_projection",
                       "ln_final.weight", "logit_scale")


def _open_clip():
    import open_clip  # imported lazily: it takes seconds and most commands need it only here
    return open_clip


def _openai_name_for_arch(arch):
    """open_clip's architecture name for an OpenAI model ("ViT-L/14@336px" -> "ViT-L-14-336")."""
    return {name.replace("/", "-").replace("@336px", "-336"): name for name in W.available_models()}.get(arch)


def resolve_name(name):
    """Classify `name` as ("openai", model_name), ("file", path) or ("open_clip", arch, tag).

    Raises UserError for a name that is none of these, with the valid choices.
    """
    name = str(name).strip()
    if name in W.OPENAI_URLS:
        return ("openai", name)
    path = os.path.expanduser(name)
    if os.path.isfile(path):
        return ("file", os.path.abspath(path))
    if name.count("/") == 1:
        arch, tag = name.split("/")
        if tag.lower() == "openai" and _openai_name_for_arch(arch):
            return ("openai", _openai_name_for_arch(arch))
        open_clip = _open_clip()
        if arch in open_clip.list_models():
            if open_clip.is_pretrained_cfg(arch, tag):
                return ("open_clip", arch, tag)
            tags = open_clip.list_pretrained_tags_by_model(arch)
            raise UserError(
                f"open_clip architecture {arch} has no pretrained tag {tag!r}; "
                f"valid tags: {', '.join(tags) if tags else '(none)'}."
            )
    if _looks_like_path(name):
        raise CheckpointError(f"CLIP weights file {os.path.abspath(path)} does not exist; check the path.")
    raise UserError(_unknown_name_message(name))


def _looks_like_path(name):
    return name.startswith(("/", "./", "../", "~")) or name.endswith((".pt", ".pth", ".bin", ".tar", ".safetensors"))


def _unknown_name_message(name):
    valid = W.available_models()
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    if not close:
        lowered = {v.lower(): v for v in valid}
        close = [lowered[name.lower()]] if name.lower() in lowered else []
    hint = f"did you mean {close[0]!r}? " if close else ""
    return (
        f"Unknown CLIP model {name!r}; {hint}valid names are {', '.join(valid)}, an open_clip "
        f"'ARCH/TAG' such as 'ViT-B-32/laion2b_s34b_b79k', or the path of a weights file."
    )


def default_device():
    return "cuda" if torch.cuda.is_available() else "cpu"


def load(name, device=None, jit=False, download_root=None, *, cache_dir=None, weights=None):
    """Load a CLIP model: returns (model, preprocess), with OpenAI's signature.

    model: `clip.model.CLIP` in eval mode on `device` (default: CUDA when available), fp32 on
    CPU, fp16 matrices elsewhere. preprocess: OpenAI's test transform for PIL images.
    `download_root` / `cache_dir` replace $TASKRES_CLIP_CACHE / ~/.cache/clip; `weights` (a
    file path) replaces the file the name would read. `jit=True` (OpenAI's TorchScript model)
    is not offered: the eager model is returned, with a warning.
    """
    if jit:
        warnings.warn("clip.load(jit=True) is not supported; returning the eager (jit=False) model", stacklevel=2)
    device = torch.device(device or default_device())
    cache_dir = cache_dir or download_root
    kind, *rest = resolve_name(name)
    weights = os.path.abspath(os.path.expanduser(str(weights))) if weights else None
    mean, std = CLIP_MEAN, CLIP_STD
    if kind == "open_clip":
        model, mean, std = _load_open_clip(*rest, weights=weights, cache_dir=cache_dir)
    else:
        path = weights or (rest[0] if kind == "file" else W.resolve_openai_weights(rest[0], cache_dir))
        logger.info("Loading CLIP %s from %s", name, path)
        model = build_fp32_model(W.read_state_dict(path), path)
    model = model.to(device).eval()
    if device.type != "cpu":
        # OpenAI's load keeps build_model's fp16 matrices off the CPU; open_clip's own models
        # (norms that expect one dtype) go to fp16 whole.
        convert_weights(model) if isinstance(model, CLIP) else model.half()
    return model, build_preprocess(model.image_resolution, mean, std)


def local_weights_path(name, cache_dir=None, weights=None):
    """The file `load(name, cache_dir=..., weights=...)` would read, if it is on disk; else None.

    Never downloads. None too for open_clip tags, whose files live in open_clip's own cache.
    Callers use it to key caches on the exact weights file.
    """
    if weights:
        path = os.path.abspath(os.path.expanduser(str(weights)))
        return path if os.path.isfile(path) else None
    kind, *rest = resolve_name(name)
    if kind == "file":
        return rest[0]
    if kind == "openai":
        path = W.cached_file_path(rest[0], cache_dir)
        return path if os.path.isfile(path) else None
    return None


def build_fp32_model(state_dict, source="<state dict>"):
    """An fp32 `clip.model.CLIP` holding an OpenAI-format state dict, architecture inferred from it.

    Unlike OpenAI's `build_model` (fp16 matrices) the weights keep the precision they are
    stored in; malformed dicts raise CheckpointError naming `source`.
    """
    state = {k: v for k, v in state_dict.items() if k not in W.NON_WEIGHT_KEYS}
    missing = [k for k in _REQUIRED_TEXT_KEYS if k not in state]
    if "visual.proj" not in state and "visual.attnpool.positional_embedding" not in state:
        missing.append("visual.proj or visual.attnpool.positional_embedding")
    if missing:
        raise CheckpointError(
            f"{source} is not an OpenAI-format CLIP checkpoint (missing {', '.join(missing)}); "
            f"pass a file saved from an OpenAI/open_clip CLIP model."
        )
    try:
        model = CLIP(**architecture_from_state_dict(state))
        model.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, ValueError, AssertionError, ZeroDivisionError) as e:
        raise CheckpointError(
            f"{source} does not describe a CLIP model of OpenAI's architecture ({W.short_reason(e)}); "
            f"check that it is an unmodified OpenAI-format checkpoint."
        ) from e
    return model.eval()


# open_clip config keys our CLIP expresses (anything else: open_clip builds the model itself).
_PLAIN_KEYS = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu"}
_PLAIN_VISION_KEYS = {"image_size", "layers", "width", "head_width", "patch_size", "mlp_ratio"}
_PLAIN_TEXT_KEYS = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio"}


def clip_kwargs_from_open_clip(model_cfg, quick_gelu=False):
    """`CLIP(**kwargs)` arguments for an open_clip model config, or None when CLIP cannot express it."""
    vision, text = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
    if (set(model_cfg) - _PLAIN_KEYS or set(vision) - _PLAIN_VISION_KEYS or set(text) - _PLAIN_TEXT_KEYS
            or vision.get("mlp_ratio", 4) != 4 or text.get("mlp_ratio", 4) != 4
            or not isinstance(vision.get("image_size", 224), int)):
        return None
    layers, width = vision.get("layers", 12), vision.get("width", 768)
    head_width = vision.get("head_width", 64)
    resnet = isinstance(layers, (list, tuple))
    return dict(
        embed_dim=model_cfg["embed_dim"], image_resolution=vision.get("image_size", 224),
        vision_layers=tuple(layers) if resnet else layers, vision_width=width,
        vision_patch_size=None if resnet else vision.get("patch_size", 16),
        vision_heads=(width * 32 if resnet else width) // head_width,
        context_length=text.get("context_length", 77), vocab_size=text.get("vocab_size", 49408),
        transformer_width=text.get("width", 512), transformer_heads=text.get("heads", 8),
        transformer_layers=text.get("layers", 12),
        act_layer=QuickGELU if quick_gelu or model_cfg.get("quick_gelu") else torch.nn.GELU,
    )


def open_clip_arch(name):
    """open_clip's architecture name for an OpenAI model name ("ViT-L/14@336px" -> "ViT-L-14-336")."""
    return name.replace("/", "-").replace("@336px", "-336") if name in W.OPENAI_URLS else name


def untrained_model(name, seed=0):
    """Architecture `name` (OpenAI or open_clip name) with seeded random weights, fp32, eval mode.

    OpenAI names get OpenAI's architecture with QuickGELU; the same seed gives the same weights.
    """
    open_clip = _open_clip()
    arch = open_clip_arch(name)
    model_cfg = open_clip.get_model_config(arch)
    if model_cfg is None:
        raise UserError(_unknown_name_message(name))
    kwargs = clip_kwargs_from_open_clip(model_cfg, quick_gelu=name in W.OPENAI_URLS)
    with torch.random.fork_rng(devices=[]):  # leave the caller's random stream untouched
        torch.manual_seed(seed)
        if kwargs is not None:
            return CLIP(**kwargs).eval()
        return add_attributes(open_clip.create_model(arch, pretrained=None)).eval()


def add_attributes(model):
    """Give an open_clip model the attributes of ours it lacks: `embed_dim`, `image_resolution`,
    `visual.input_resolution` (`dtype` is a property of our CLIP only)."""
    if not hasattr(model, "embed_dim"):
        proj = model.text_projection
        model.embed_dim = int(proj.out_features if isinstance(proj, torch.nn.Linear) else proj.shape[1])
    if not hasattr(model, "image_resolution"):
        size = model.visual.image_size
        model.image_resolution = int(size[0] if isinstance(size, (tuple, list)) else size)
    if not hasattr(model.visual, "input_resolution"):
        model.visual.input_resolution = model.image_resolution
    return model


def _load_open_clip(arch, tag, weights=None, cache_dir=None):
    """Build open_clip architecture `arch` and load the weights of `tag` (or the file `weights`)."""
    open_clip = _open_clip()
    model_cfg = open_clip.get_model_config(arch) or {}
    text_cfg = model_cfg.get("text_cfg", {})
    if model_cfg.get("custom_text") or "hf_model_name" in text_cfg or "multimodal_cfg" in model_cfg:
        raise UserError(
            f"open_clip model {arch}/{tag} has a custom text tower without the OpenAI-style "
            f"token_embedding/transformer the trainers use; pick an OpenAI-style architecture "
            f"such as ViT-B-32 or RN50."
        )
    tag_cfg = open_clip.get_pretrained_cfg(arch, tag)
    if weights is None:
        weights = _fetch_open_clip_weights(open_clip, arch, tag, tag_cfg, cache_dir)
    logger.info("Loading open_clip %s/%s from %s", arch, tag, weights)
    state = {k: v for k, v in W.read_state_dict(weights).items() if k not in W.NON_WEIGHT_KEYS}
    quick_gelu = bool(tag_cfg.get("quick_gelu", False))  # the tag knows its activation
    kwargs = clip_kwargs_from_open_clip(model_cfg, quick_gelu)
    if kwargs is not None:
        model = CLIP(**kwargs)
    else:
        model = open_clip.create_model(arch, pretrained=None, precision="fp32", device="cpu",
                                       force_quick_gelu=quick_gelu, pretrained_image=False, pretrained_text=False)
    if not isinstance(model, (CLIP, open_clip.CLIP)):
        raise UserError(f"open_clip model {arch} is a {type(model).__name__}, not a CLIP model; pick another architecture.")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"CLIP weights file {weights} does not fit open_clip architecture {arch} "
            f"({W.short_reason(e)}); pass the weights of {arch}/{tag}, or name the model the file was made for."
        ) from e
    mean = tuple(tag_cfg.get("mean", CLIP_MEAN))
    std = tuple(tag_cfg.get("std", CLIP_STD))
    return (model if isinstance(model, CLIP) else add_attributes(model)).eval(), mean, std


def _fetch_open_clip_weights(open_clip, arch, tag, tag_cfg, cache_dir):
    folder = W.resolve_cache_dir(cache_dir)
    hf_repo = os.path.split(tag_cfg.get("hf_hub", ""))[0]  # "org/repo/" or "org/repo/file.bin"
    where = f"https://huggingface.co/{hf_repo}" if hf_repo else tag_cfg.get("url") or "open_clip's table"
    if W.is_offline():
        reason = f"{W.OFFLINE_ENV}={os.environ.get(W.OFFLINE_ENV)} forbids downloads"
    else:
        try:
            path = open_clip.download_pretrained(tag_cfg, cache_dir=folder)
            if path and os.path.isfile(path):
                return path
            reason = "open_clip returned no file"
        except Exception as e:  # huggingface_hub and urllib raise many types for one cause: no file
            reason = W.short_reason(e)
            logger.debug("open_clip download of %s/%s failed", arch, tag, exc_info=True)
    raise CheckpointError(
        f"open_clip weights for {arch}/{tag} are not in {folder} and could not be downloaded "
        f"({reason}); download them from {where}, or pass MODEL.BACKBONE.WEIGHTS /path/to/file."
    )


def _to_rgb(image):
    # A named function, not a lambda, so the transform pickles into DataLoader workers.
    return image.convert("RGB")


def build_preprocess(resolution, mean=CLIP_MEAN, std=CLIP_STD):
    """OpenAI's test transform: bicubic resize of the short side, center crop, RGB, normalise."""
    return T.Compose([
        T.Resize(resolution, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(resolution),
        _to_rgb,
        T.ToTensor(),
        T.Normalize(mean, std),
    ])
