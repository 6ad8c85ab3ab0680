"""``clip.clip`` of the copy: OpenAI's names; ``_download`` stands for OpenAI's checksum-or-download one."""
import importlib

from .model import build_model  # noqa: F401
from .simple_tokenizer import SimpleTokenizer as _Tokenizer  # noqa: F401

__all__ = ["available_models", "tokenize"]

_project = importlib.import_module("clip.clip")
_MODELS = dict(_project._MODELS)


def available_models():
    return list(_MODELS)


def _download(url, root=None):
    # OpenAI's re-downloads a file whose sha256 is not the release's: offline that is an error
    raise RuntimeError(f"this copy would download {url}")


def tokenize(texts, context_length=77, truncate=False):
    return _project.tokenize(texts, context_length=context_length, truncate=truncate)
