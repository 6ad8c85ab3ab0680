"""`clip.tokenize`: OpenAI's BPE tokenizer (`clip.simple_tokenizer`) with OpenAI's padding rules.

Each text becomes [<start>, tokens..., <end>, 0, 0, ...] of length `context_length`; a
text too long for it is an error unless `truncate=True`, which keeps <end> as the last id.
"""
import functools

import torch

from engine.errors import UserError

from .simple_tokenizer import EOT, SOT, SimpleTokenizer


@functools.lru_cache(maxsize=1)
def _tokenizer():
    return SimpleTokenizer()  # reads the BPE merges once, on first use


def tokenize(texts, context_length=77, truncate=False):
    """Token ids of one string or a list of strings: LongTensor [N, context_length]."""
    if isinstance(texts, str):
        texts = [texts]
    tok = _tokenizer()
    sot, eot = tok.encoder[SOT], tok.encoder[EOT]
    result = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = [sot] + tok.encode(text) + [eot]
        if len(ids) > context_length:
            if not truncate:
                raise UserError(
                    f"Text {text[:60]!r}{'...' if len(text) > 60 else ''} has {len(ids)} tokens, more than the "
                    f"context length {context_length}; shorten it or call tokenize(..., truncate=True)."
                )
            ids = ids[:context_length]
            ids[-1] = eot
        result[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return result
