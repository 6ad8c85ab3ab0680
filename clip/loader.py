"""`clip.load`: turn a model name or a weights file into an open_clip CLIP model + preprocess.

Names resolve in one place (`resolve_name`):

    "RN50", "ViT-B/16", ...           OpenAI's models; weights from the cache or downloaded
    "RN50/openai", "ViT-B-16/openai"  the same, spelled the open_clip way
    "ViT-B-32/laion2b_s34b_b79k"      an open_clip architecture with a pretrained tag
    "/path/to/file.pt"                any OpenAI-format checkpoint

For OpenAI names and files the architecture is inferred from the weights by open_clip's
`build_model_from_openai_state_dict`, so a small test checkpoint stored as RN50.pt gives a
small model. For open_clip tags the architecture comes from open_clip's config and the
weights file must fit it.
"""
import difflib
import logging
import os

import torch
from torchvision import transforms as T

from engine.errors import CheckpointError, UserError

from . import weights as W

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


def load(name, device="cpu", cache_dir=None, weights=None):
    """Load a CLIP model: returns (model, preprocess).

    model: open_clip `CLIP`, fp32, eval mode, on `device`, with `embed_dim` and
    `image_resolution` attributes. preprocess: OpenAI's test transform for PIL images.
    `weights` (a file path) replaces the file the name would read; `cache_dir` replaces
    $TASKRES_CLIP_CACHE / ~/.cache/clip.
    """
    kind, *rest = resolve_name(name)
    weights = os.path.abspath(os.path.expanduser(str(weights))) if weights else None
    mean, std = CLIP_MEAN, CLIP_STD
    if kind == "open_clip":
        model, mean, std = _load_open_clip(*rest, weights=weights, cache_dir=cache_dir)
    else:
        path = weights or (rest[0] if kind == "file" else W.resolve_openai_weights(rest[0], cache_dir))
        logger.info("Loading CLIP %s from %s", name, path)
        model = build_model(W.read_state_dict(path), path)
    model = model.to(device).eval()
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


def build_model(state_dict, source="<state dict>"):
    """An fp32 open_clip CLIP whose architecture is inferred from an OpenAI-format state dict."""
    state = {k: v for k, v in state_dict.items() if k not in W.NON_WEIGHT_KEYS}
    missing = [k for k in _REQUIRED_TEXT_KEYS if k not in state]
    if "visual.proj" not in state and "visual.attnpool.positional_embedding" not in state:
        missing.append("visual.proj or visual.attnpool.positional_embedding")
    if missing:
        raise CheckpointError(
            f"{source} is not an OpenAI-format CLIP checkpoint (missing {', '.join(missing)}); "
            f"pass a file saved from an OpenAI/open_clip CLIP model."
        )
    from open_clip.model import build_model_from_openai_state_dict

    try:
        # The helper casts weights to fp16 as OpenAI's release did; go back to fp32 and
        # reload so weights stored in fp32 keep their full precision.
        model = build_model_from_openai_state_dict(dict(state), cast_dtype=None)
        model.float()
        model.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, ValueError, AssertionError, ZeroDivisionError) as e:
        raise CheckpointError(
            f"{source} does not describe a CLIP model open_clip can build ({W.short_reason(e)}); "
            f"check that it is an unmodified OpenAI-format checkpoint."
        ) from e
    return add_attributes(model)


def add_attributes(model):
    """Set the `embed_dim` / `image_resolution` attributes the trainers rely on (if missing)."""
    if not hasattr(model, "embed_dim"):
        proj = model.text_projection
        model.embed_dim = int(proj.out_features if isinstance(proj, torch.nn.Linear) else proj.shape[1])
    if not hasattr(model, "image_resolution"):
        size = model.visual.image_size
        model.image_resolution = int(size[0] if isinstance(size, (tuple, list)) else size)
    return model


_add_attributes = add_attributes  # older name, used by trainers/clip_trainer.py


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
    model = open_clip.create_model(
        arch, pretrained=None, precision="fp32", device="cpu",
        force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),  # the tag knows its activation
        pretrained_image=False, pretrained_text=False,
    )
    if not isinstance(model, open_clip.CLIP):
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
    return add_attributes(model), mean, std


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
