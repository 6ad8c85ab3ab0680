"""`clip.clip`: the module CoOp-family code imports as `from clip import clip`, with OpenAI's names.

    clip.load(name, device, jit=False, download_root=None)   -> (model, preprocess)
    clip.tokenize(texts, context_length=77, truncate=False)   -> [N, context_length] ids
    clip.available_models(), clip._MODELS (name -> URL)
    clip._download(url, root=None)  -> path of the cached file, downloaded if missing
    clip.build_model(state_dict)    -> OpenAI's fp16 CLIP (see clip.model)
    clip._transform(n_px)           -> OpenAI's test transform

Differences from OpenAI's, on purpose: a file already in the cache is used without
re-checking its sha256 (users drop converted or tiny checkpoints there); a missing file that
cannot be downloaded is one CheckpointError sentence naming the path and the URL; token ids
are int64 (OpenAI's are int32; both index an embedding the same way).
"""
import os

from torchvision.transforms import InterpolationMode

from . import weights as W
from .loader import CLIP_MEAN, CLIP_STD, _to_rgb, build_preprocess, load
from .model import build_model
from .tokenizer import tokenize

__all__ = ["available_models", "load", "tokenize"]

BICUBIC = InterpolationMode.BICUBIC
_MODELS = W.OPENAI_URLS  # the same dict: a URL patched here is the one `load` downloads
_convert_image_to_rgb = _to_rgb


def available_models():
    """OpenAI's CLIP model names."""
    return list(_MODELS)


def _download(url, root=None):
    """The cached copy of `url` in `root` (default: $TASKRES_CLIP_CACHE or ~/.cache/clip), downloaded if absent.

    CoOp calls it with the URL alone (its copy of OpenAI's code defaults `root`).
    """
    target = os.path.join(W.resolve_cache_dir(root), os.path.basename(url))
    label = next((name for name, known in _MODELS.items() if known == url), os.path.basename(url))
    return W.fetch(url, target, label)


def _transform(n_px):
    """OpenAI's preprocess for `n_px` pixels: bicubic resize, center crop, RGB, CLIP normalisation."""
    return build_preprocess(n_px, CLIP_MEAN, CLIP_STD)
