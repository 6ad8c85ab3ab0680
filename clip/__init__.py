"""A drop-in for OpenAI's `clip` package, as CoOp-family code uses it, plus weight resolution.

    import clip                        clip.load / clip.tokenize / clip.available_models
    from clip import clip              the module CoOp imports: _MODELS, _download, build_model, ...
    from clip.model import build_model, convert_weights, CLIP, Transformer, LayerNorm, ...
    from clip.simple_tokenizer import SimpleTokenizer

    model, preprocess = clip.load("RN50", device="cpu")
    features = model.encode_text(clip.tokenize(["a photo of a cat."]))

The model is OpenAI's architecture (clip/model.py) with OpenAI's attribute names and dtypes;
open_clip supplies pretrained tags and architectures ours cannot express (clip/loader.py);
clip/weights.py finds the files (cache, download with checksum, one-sentence errors).
"""
from . import model, simple_tokenizer
from .loader import add_attributes, build_preprocess, load, local_weights_path, untrained_model
from .model import build_model
from .tokenizer import tokenize
from .weights import available_models
from . import clip  # noqa: E402  (after the names above: the submodule `clip.clip` imports them)

__all__ = ["add_attributes", "available_models", "build_model", "build_preprocess", "clip", "load",
           "local_weights_path", "model", "simple_tokenizer", "tokenize", "untrained_model"]
