"""The CLIP facade: `available_models()`, `load(name)` and `tokenize(texts)`, OpenAI's API.

Model code and tokenizer are open_clip's; this package only decides where weights come
from (cache, download, explicit file) and fails with one clear sentence when it cannot.

    model, preprocess = clip.load("RN50", device="cpu")
    text = clip.tokenize(["a photo of a cat."])
    features = model.encode_text(text)
"""
from .loader import add_attributes, build_model, build_preprocess, load, local_weights_path
from .tokenizer import tokenize
from .weights import available_models

__all__ = ["add_attributes", "available_models", "build_model", "build_preprocess", "load", "local_weights_path",
           "tokenize"]
