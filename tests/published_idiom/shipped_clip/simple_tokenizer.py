"""The copy's tokenizer: OpenAI's BPE (the project's vocabulary file; every repo ships the same one)."""
import importlib

_project = importlib.import_module("clip.simple_tokenizer")


class SimpleTokenizer(_project.SimpleTokenizer):
    pass
