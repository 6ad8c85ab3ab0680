"""`SimpleTokenizer`: CLIP's byte-level BPE (OpenAI's ids), as `clip.simple_tokenizer` provides it.

CoOp-family code builds one at import (`_tokenizer = SimpleTokenizer()`) and calls
`encode(text)` (ids without start/end tokens), `decode(ids)` and `encoder["<|endoftext|>"]`.
The merges are OpenAI's file `bpe_simple_vocab_16e6.txt.gz`; open_clip ships the same file, so
it is read from open_clip's folder without importing open_clip (which takes a second).
"""
import functools
import gzip
import html
import importlib.util
import os

import ftfy
import regex

SOT, EOT = "<|startoftext|>", "<|endoftext|>"
# OpenAI's vocabulary: 256 byte symbols, the same with "</w>", 48894 merges, 2 special tokens.
NUM_MERGES = 49152 - 256 - 2
_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


def default_bpe():
    """Path of the BPE merges file (open_clip's copy of OpenAI's)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("clip.simple_tokenizer reads the BPE file shipped with open_clip; "
                          "pip install open_clip_torch.")
    return os.path.join(spec.submodule_search_locations[0], "bpe_simple_vocab_16e6.txt.gz")


@functools.lru_cache(maxsize=1)
def bytes_to_unicode():
    """A reversible byte -> printable character map: printable Latin-1 bytes map to themselves."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in keep}
    # Unprintable bytes borrow characters past Latin-1; insertion order fixes the vocabulary's ids.
    for extra, b in enumerate(b for b in range(256) if b not in table):
        table[b] = chr(256 + extra)
    return table


def _pairs(word):
    return {(a, b) for a, b in zip(word, word[1:])}


def _clean(text):
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return regex.sub(r"\s+", " ", text).strip().lower()


class SimpleTokenizer:
    """encode(text) -> BPE ids (lower-cased, cleaned); decode(ids) -> text; `encoder`/`decoder` dicts."""

    def __init__(self, bpe_path=None):
        with gzip.open(bpe_path or default_bpe(), "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")[1:NUM_MERGES + 1]  # the first line is a version header
        merges = [tuple(line.split()) for line in lines]
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        symbols = list(self.byte_encoder.values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [SOT, EOT]
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.decoder = {i: token for token, i in self.encoder.items()}
        self.bpe_ranks = {merge: i for i, merge in enumerate(merges)}
        self.cache = {SOT: SOT, EOT: EOT}
        self.pat = _PATTERN

    def bpe(self, token):
        """The space-separated BPE pieces of one pre-token (its last piece ends in "</w>")."""
        if token in self.cache:
            return self.cache[token]
        word = (*token[:-1], token[-1] + "</w>")
        pairs = _pairs(word)
        while pairs:
            first, second = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if (first, second) not in self.bpe_ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
            pairs = _pairs(word)
        result = " ".join(word)
        self.cache[token] = result
        return result

    def encode(self, text):
        ids = []
        for token in self.pat.findall(_clean(text)):
            symbols = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[piece] for piece in self.bpe(symbols).split(" "))
        return ids

    def decode(self, tokens):
        text = "".join(self.decoder[int(t)] for t in tokens)
        data = bytearray(self.byte_decoder[c] for c in text)
        return data.decode("utf-8", errors="replace").replace("</w>", " ")
