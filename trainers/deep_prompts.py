"""Prompt tokens inside CLIP's towers (clip/model.py's OpenAI modules), for methods that prompt layers.

Two small forwards that run CLIP's own blocks and put learnt tokens into the sequence; the model is
never copied or changed:

    prompted_vit(visual, images, tokens, deep, position, norm_prompts)   -> image features [B, D]
    prompted_text(text_encoder, prompts, tokenized, deep)                 -> text features [C, D]

``tokens`` [n, W] or [B, n, W] enter before the first block; ``deep[j]`` replaces the prompt slots
before block j + 1 (a prompt per layer, "deep" prompting); when ``deep`` is shorter than the tower
the last prompts flow on through the remaining blocks. The layouts of the methods that use them:

    MVLPT/VPT           visual tokens after the class token, added after ln_pre   position="after_cls", norm_prompts=False
    MaPLe, PromptSRC    visual tokens after the patches, through ln_pre            position="end", norm_prompts=True
    text (MaPLe, PromptSRC)  the context slots 1..n (after SOS) replaced per block

Every block is sequence-first (L, N, W) as OpenAI's; prompts are cast to the tower's dtype.
"""
import torch

POSITIONS = ("after_cls", "end")


def _batch(tokens, batch, dtype):
    """[n, W] or [B, n, W] -> [B, n, W] in ``dtype``."""
    if tokens.dim() == 2:
        tokens = tokens.unsqueeze(0)
    return tokens.to(dtype).expand(batch, -1, -1)


def _replace(x, tokens, position):
    """Sequence-first x [L, B, W] with the n prompt slots replaced by ``tokens`` [B, n, W]."""
    n = tokens.shape[1]
    tokens = tokens.permute(1, 0, 2)
    if position == "end":
        return torch.cat([x[:x.shape[0] - n], tokens], dim=0)
    return torch.cat([x[:1], tokens, x[1 + n:]], dim=0)


def patch_tokens(visual, images):
    """The ViT's input sequence before ln_pre: class token + patch embeddings + positions [B, 1 + P, W]."""
    x = visual.conv1(images)
    x = x.flatten(start_dim=2).permute(0, 2, 1)  # N C H W -> N (H W) C
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    return torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)


def prompted_vit(visual, images, tokens, deep=(), position="end", norm_prompts=True):
    """CLIP's VisionTransformer forward with ``tokens`` in the sequence (see the module docstring)."""
    if position not in POSITIONS:
        raise ValueError(f"position must be one of {POSITIONS}, not {position!r}")
    x = patch_tokens(visual, images)
    batch = x.shape[0]
    tokens = _batch(tokens, batch, x.dtype)
    if norm_prompts:
        x = torch.cat([x, tokens], dim=1) if position == "end" else torch.cat([x[:, :1], tokens, x[:, 1:]], dim=1)
        x = visual.ln_pre(x)
    else:
        x = visual.ln_pre(x)
        x = torch.cat([x[:, :1], tokens, x[:, 1:]], dim=1) if position == "after_cls" else torch.cat([x, tokens], 1)
    x = x.permute(1, 0, 2)
    for i, block in enumerate(visual.transformer.resblocks):
        if 0 < i <= len(deep):
            x = _replace(x, _batch(deep[i - 1], batch, x.dtype), position)
        x = block(x)
    x = visual.ln_post(x.permute(1, 0, 2)[:, 0, :])
    return x @ visual.proj if visual.proj is not None else x


def prompted_text(text_encoder, prompts, tokenized, deep=()):
    """The text tower (a CoOp ``TextEncoder``: transformer, positional_embedding, ln_final,
    text_projection, dtype) on prompt embeddings [C, L, W] whose slots 1..n (n = deep[j].shape[0])
    are replaced by ``deep[j]`` before block j + 1. Features at each EOT token [C, D]."""
    dtype = text_encoder.dtype
    eot = tokenized.argmax(dim=-1)
    # causal mask: no position sees a later one, so the padding after the longest prompt's EOT
    # changes nothing at the EOT tokens (clip/model.py's blocks cut their mask to the length)
    length = int(eot.max()) + 1
    x = prompts[:, :length].to(dtype) + text_encoder.positional_embedding[:length].to(dtype)
    x = x.permute(1, 0, 2)
    n_cls = x.shape[1]
    for i, block in enumerate(text_encoder.transformer.resblocks):
        if 0 < i <= len(deep):
            x = _replace(x, _batch(deep[i - 1], n_cls, dtype), "after_cls")
        x = block(x)
    x = text_encoder.ln_final(x.permute(1, 0, 2)).to(dtype)
    return x[torch.arange(x.shape[0], device=x.device), eot] @ text_encoder.text_projection


def initial_context(clip_model, n_ctx, ctx_init, dtype):
    """MaPLe's and PromptSRC's text context at the start: with CTX_INIT and n_ctx <= 4 the first n_ctx
    token embeddings of CTX_INIT (its other words stay fixed text), else N(0, 0.02) vectors after
    "X" placeholders. Returns (ctx [n_ctx, width], the prompt prefix the class prompts are built on)."""
    import clip
    from torch import nn

    if ctx_init and n_ctx <= 4:
        ctx_init = ctx_init.replace("_", " ")
        tokens = clip.tokenize(ctx_init).to(clip_model.token_embedding.weight.device)
        with torch.no_grad():
            embedding = clip_model.token_embedding(tokens).type(dtype)
        return embedding[0, 1:1 + n_ctx, :].cpu(), ctx_init
    ctx = torch.empty(n_ctx, clip_model.ln_final.weight.shape[0], dtype=dtype)
    nn.init.normal_(ctx, std=0.02)
    return ctx, " ".join(["X"] * n_ctx)


def require_vit(method, cfg, clip_model):
    """A method that prompts the ViT's layers refuses another image encoder in one sentence."""
    from clip.model import VisionTransformer
    from engine.errors import ConfigError

    if not isinstance(clip_model.visual, VisionTransformer):
        raise ConfigError(f"{method} prompts the layers of a ViT, but {cfg.MODEL.BACKBONE.NAME} has a "
                          f"{type(clip_model.visual).__name__} image encoder; use a ViT-* backbone.")
