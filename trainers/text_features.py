"""Text-side features of CLIP used to build classifiers: raw prompt embeddings per template.

`prompt_features` returns the text encoder's output per (template, class) before any
normalisation; with ``projection`` given it is used instead of CLIP's ``text_projection``
(an enhanced base), and with ``projection=False`` the pre-projection features are returned
(what the enhanced-base producer tunes its projection on).
"""
import contextlib

import torch

import clip


@contextlib.contextmanager
def _text_projection(model, projection):
    """Temporarily replace (or remove, with None) the model's text projection."""
    original = model.text_projection
    try:
        model.text_projection = projection
        yield
    finally:
        model.text_projection = original


@torch.no_grad()
def prompt_features(clip_model, classnames, templates, projection=None, batch_size=512):
    """Raw text features [num_templates, num_classes, D] of ``template.format(classname)``.

    ``projection``: None keeps CLIP's text projection, a [width, D] tensor replaces it,
    ``False`` drops it (returns [T, K, width] pre-projection features).
    """
    device = clip_model.token_embedding.weight.device
    prompts = [t.format(c) for t in templates for c in classnames]
    tokens = clip.tokenize(prompts)
    replace = projection is not None
    proj = None if projection is False else (
        torch.nn.Parameter(projection.to(device=device, dtype=clip_model.text_projection.dtype), requires_grad=False)
        if replace else None)
    outputs = []
    with (_text_projection(clip_model, proj) if replace else contextlib.nullcontext()):
        for start in range(0, len(prompts), batch_size):
            outputs.append(clip_model.encode_text(tokens[start:start + batch_size].to(device)))
    feats = torch.cat(outputs)
    return feats.view(len(templates), len(classnames), -1)
