"""CoOp: Context Optimization (Zhou et al., "Learning to Prompt for Vision-Language Models", IJCV 2022).

The prompt of class k is ``[SOS] ctx_1 .. ctx_M [CLASS k] . [EOS]`` where the M context
vectors are learned in the word-embedding space and the rest of CLIP stays frozen:

    prompts  = PromptLearner()                 [n_cls, 77, width]  (ctx spliced between SOS and the name)
    text     = TextEncoder(prompts)            [n_cls, D]          (CLIP's transformer, gradients flow through)
    logits   = exp(logit_scale) * normalize(image) @ normalize(text)^T

Keys (``TRAINER.COOP``): N_CTX, CSC (one context per class), CTX_INIT (initial words; their
token count replaces N_CTX), CLASS_TOKEN_POSITION (end | middle | front), PREC.
Only ``prompt_learner`` is optimised and saved; its state dict holds ``ctx``, ``token_prefix``
and ``token_suffix`` as in the original. Loading ignores the saved prefix/suffix (the current
class names' embeddings are used) and names any other missing or unexpected key.

The image side comes from the feature cache when ``FEATURE_CACHE.ENABLED`` (the encoder is
frozen, so its output per view never changes); the text side runs every step, all classes in
one text-encoder call. ``PromptLearner``/``TextEncoder`` follow the shapes of the original so
its checkpoints load here and ours load there.
"""
import logging

import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

import clip
from clip.simple_tokenizer import SimpleTokenizer
from engine import TRAINER_REGISTRY
from engine.errors import CheckpointError, ConfigError
from engine.optim import build_lr_scheduler, build_optimizer
from engine.protocol import Protocol, Variant, coop_schedule
from engine.utils.checkpoint import load_checkpoint

from .clip_trainer import PRECISIONS, ClassTextOncePerTest, FrozenCLIPTrainer

logger = logging.getLogger(__name__)

CLASS_TOKEN_POSITIONS = ("end", "middle", "front")
_tokenizer = None


def tokenizer():
    """One BPE tokenizer per process (reading the vocabulary takes a moment)."""
    global _tokenizer
    if _tokenizer is None:
        _tokenizer = SimpleTokenizer()
    return _tokenizer


def extend_cfg(cfg):
    """TRAINER.COOP with the original's keys and defaults."""
    cfg.TRAINER.COOP = CN()
    cfg.TRAINER.COOP.N_CTX = 16  # number of context vectors
    cfg.TRAINER.COOP.CSC = False  # class-specific context
    cfg.TRAINER.COOP.CTX_INIT = ""  # initialization words
    cfg.TRAINER.COOP.PREC = "fp16"  # fp16, fp32, amp
    cfg.TRAINER.COOP.CLASS_TOKEN_POSITION = "end"  # 'middle' or 'end' or 'front'


def check_prompt_cfg(group, n_ctx, ctx_init, prec, class_token_position=None):
    """One-sentence errors for the keys shared by CoOp and CoCoOp (before CLIP is loaded)."""
    if prec not in PRECISIONS:
        raise ConfigError(f"TRAINER.{group}.PREC must be one of {', '.join(PRECISIONS)}, got {prec!r}.")
    if class_token_position is not None and class_token_position not in CLASS_TOKEN_POSITIONS:
        raise ConfigError(f"TRAINER.{group}.CLASS_TOKEN_POSITION must be one of "
                          f"{', '.join(CLASS_TOKEN_POSITIONS)}, got {class_token_position!r}.")
    if not ctx_init and (not isinstance(n_ctx, int) or n_ctx < 1):
        raise ConfigError(f"TRAINER.{group}.N_CTX must be a whole number of at least 1 (or set "
                          f"TRAINER.{group}.CTX_INIT to initial words), got {n_ctx!r}.")


def check_image_size(cfg, clip_model):
    """The prompts are learned for CLIP's own input size; another INPUT.SIZE changes the features."""
    clip_size = getattr(clip_model.visual, "input_resolution", None)
    if clip_size is not None and cfg.INPUT.SIZE[0] != clip_size:
        raise ConfigError(f"INPUT.SIZE is {tuple(cfg.INPUT.SIZE)} but the CLIP backbone "
                          f"{cfg.MODEL.BACKBONE.NAME} takes {clip_size}x{clip_size} images; set INPUT.SIZE "
                          f"({clip_size}, {clip_size}).")


class TextEncoder(nn.Module):
    """CLIP's text tower on prompt embeddings (not token ids): the features at each EOT token."""

    def __init__(self, clip_model):
        super().__init__()
        self.transformer = clip_model.transformer
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.dtype = clip_model.dtype

    def forward(self, prompts, tokenized_prompts):
        # the EOT token has the largest id in each row: its feature is the sentence's
        eot = tokenized_prompts.argmax(dim=-1)
        # The mask is causal, so no position sees a later one: the EOT features do not depend on
        # the padding after the longest prompt. Dropping it gives the same features (our
        # transformer slices its mask to the length) for a third of the 77 tokens' compute.
        length = int(eot.max()) + 1
        x = prompts[:, :length] + self.positional_embedding[:length].type(self.dtype)
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)  # the transformer takes (L, N, D)
        x = self.ln_final(x).type(self.dtype)
        return x[torch.arange(x.shape[0], device=x.device), eot] @ self.text_projection

    def forward_shared_prefix(self, prefix, suffix, tokenized_prompts):
        """The same features as ``forward(cat(prefix, suffix))`` when every class's prompt starts
        with the same ``prefix`` (SOS + a context shared by the classes): under the causal mask
        those positions compute the same values for every class, so they run once and each class
        runs only its own tokens (its name, ".", EOT) on top: ~4x less text compute for CoOp's
        default. prefix [B, P, D] (B contexts, e.g. CoCoOp's one per image), suffix [C, *, D]
        -> features [B, C, D]."""
        eot = tokenized_prompts.argmax(dim=-1)
        n_prefix = prefix.shape[1]
        length = int(eot.max()) + 1 - n_prefix
        pos = self.positional_embedding.type(self.dtype)
        p = prefix + pos[:n_prefix]
        s = (suffix[:, :length] + pos[n_prefix:n_prefix + length]).unsqueeze(0).expand(prefix.shape[0], -1, -1, -1)
        for block in self.transformer.resblocks:
            p, s = _prefix_block(block, p, s)
        s = self.ln_final(s).type(self.dtype)
        index = (eot - n_prefix).view(1, -1, 1, 1).expand(s.shape[0], -1, 1, s.shape[-1])
        return s.gather(2, index).squeeze(2) @ self.text_projection


def _heads(x, n_head):
    """[..., L, D] -> [..., n_head, L, D / n_head]."""
    return x.unflatten(-1, (n_head, -1)).transpose(-3, -2)


def _prefix_block(block, prefix, suffix):
    """One residual attention block on B prefixes [B, P, D], each shared by C classes, and the
    per-class rests [B, C, S, D]; each rest position sees its whole prefix and its rest up to
    itself, which is what the causal mask lets it see in the full sequence."""
    attn = block.attn
    n_head = attn.num_heads
    batch, n_cls, length = suffix.shape[:3]
    n_prefix = prefix.shape[1]
    qp, kp, vp = (_heads(t, n_head) for t in F.linear(block.ln_1(prefix), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1))
    qs, ks, vs = (_heads(t, n_head) for t in F.linear(block.ln_1(suffix), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1))
    out_p = F.scaled_dot_product_attention(qp, kp, vp, is_causal=True)  # [B, h, P, d]
    keys = torch.cat([kp.unsqueeze(1).expand(-1, n_cls, -1, -1, -1), ks], dim=-2).flatten(0, 1)
    values = torch.cat([vp.unsqueeze(1).expand(-1, n_cls, -1, -1, -1), vs], dim=-2).flatten(0, 1)
    rows = torch.arange(length, device=prefix.device).unsqueeze(1)
    cols = torch.arange(n_prefix + length, device=prefix.device).unsqueeze(0) - n_prefix
    out_s = F.scaled_dot_product_attention(qs.flatten(0, 1), keys, values, attn_mask=cols <= rows)
    out_s = out_s.unflatten(0, (batch, n_cls))
    merge = lambda t: t.transpose(-3, -2).flatten(-2)  # noqa: E731  [..., h, L, d] -> [..., L, h*d]
    prefix = prefix + F.linear(merge(out_p), attn.out_proj.weight, attn.out_proj.bias)
    suffix = suffix + F.linear(merge(out_s), attn.out_proj.weight, attn.out_proj.bias)
    return prefix + block.mlp(block.ln_2(prefix)), suffix + block.mlp(block.ln_2(suffix))


def supports_shared_prefix(transformer):
    """Whether the text transformer is OpenAI's layout (blocks with attn/ln_1/ln_2/mlp, sequence-first
    nn.MultiheadAttention with packed projections), which the shared-prefix path reimplements."""
    blocks = getattr(transformer, "resblocks", None)
    if blocks is None:
        return False
    return all(isinstance(getattr(b, "attn", None), nn.MultiheadAttention) and not b.attn.batch_first
               and b.attn.in_proj_weight is not None and all(hasattr(b, n) for n in ("ln_1", "ln_2", "mlp"))
               for b in blocks)


def init_context(clip_model, n_ctx, ctx_init, shape_prefix, dtype):
    """(context vectors, prompt prefix text, n_ctx): from CTX_INIT's word embeddings, or random."""
    if ctx_init:
        ctx_init = ctx_init.replace("_", " ")
        n_ctx = len(ctx_init.split(" "))
        tokens = clip.tokenize(ctx_init).to(clip_model.token_embedding.weight.device)
        with torch.no_grad():
            embedding = clip_model.token_embedding(tokens).type(dtype)
        return embedding[0, 1:1 + n_ctx, :].cpu(), ctx_init, n_ctx
    width = clip_model.ln_final.weight.shape[0]
    ctx = torch.empty(*shape_prefix, n_ctx, width, dtype=dtype)
    nn.init.normal_(ctx, std=0.02)
    return ctx, " ".join(["X"] * n_ctx), n_ctx


def class_prompt_embeddings(clip_model, classnames, prompt_prefix, dtype):
    """Token ids and embeddings of "<prefix> <name>." per class, and each name's token count."""
    classnames = [name.replace("_", " ") for name in classnames]
    name_lens = [len(tokenizer().encode(name)) for name in classnames]
    tokenized = clip.tokenize([f"{prompt_prefix} {name}." for name in classnames])
    with torch.no_grad():
        embedding = clip_model.token_embedding(tokenized.to(clip_model.token_embedding.weight.device)).type(dtype)
    return tokenized, embedding.cpu(), name_lens


class PromptLearner(nn.Module):
    """The learnable context and the frozen token embeddings around it; forward() -> prompts."""

    def __init__(self, classnames, clip_model, n_ctx=16, ctx_init="", csc=False, class_token_position="end"):
        super().__init__()
        n_cls = len(classnames)
        dtype = clip_model.dtype
        if ctx_init:
            logger.info("Initializing the context from %r", ctx_init)
        else:
            logger.info("Initializing %s", "class-specific contexts" if csc else "a generic context")
        ctx, prompt_prefix, n_ctx = self.initial_context(clip_model, n_cls, n_ctx, ctx_init, csc, dtype)
        logger.info('Initial context: "%s"', prompt_prefix)
        logger.info("Number of context words (tokens): %d", n_ctx)
        self.ctx = nn.Parameter(ctx)

        tokenized, embedding, name_lens = class_prompt_embeddings(clip_model, classnames, prompt_prefix, dtype)
        # Saved with the checkpoint (as the original does) but ignored when loading: the current
        # class names' embeddings are the right ones.
        self.register_buffer("token_prefix", embedding[:, :1, :])  # SOS
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx:, :])  # CLASS, ".", EOS, padding
        self.register_buffer("tokenized_prompts", tokenized, persistent=False)
        self.n_cls = n_cls
        self.n_ctx = n_ctx
        self.name_lens = name_lens
        self.class_token_position = class_token_position

    def initial_context(self, clip_model, n_cls, n_ctx, ctx_init, csc, dtype):
        """(context vectors, prompt prefix text, n_ctx): CoOp's rule; a method with another rule overrides it."""
        return init_context(clip_model, n_ctx, ctx_init, (n_cls,) if csc and not ctx_init else (), dtype)

    def forward(self):
        return assemble_prompts(self.token_prefix, self.ctx, self.token_suffix, self.name_lens,
                                self.class_token_position, self.n_ctx)


def assemble_prompts(prefix, ctx, suffix, name_lens, class_token_position, n_ctx):
    """Class prompts [n_cls, L, width]: SOS, the context ([n_ctx, width] shared or [n_cls, n_ctx,
    width] per class) placed at the end, middle or front of each class name, then the rest."""
    n_cls = prefix.shape[0]
    if ctx.dim() == 2:
        ctx = ctx.unsqueeze(0).expand(n_cls, -1, -1)
    if class_token_position == "end":
        return torch.cat([prefix, ctx, suffix], dim=1)
    half = n_ctx // 2
    prompts = []
    for i, name_len in enumerate(name_lens):
        name, rest = suffix[i:i + 1, :name_len], suffix[i:i + 1, name_len:]
        if class_token_position == "middle":
            parts = [prefix[i:i + 1], ctx[i:i + 1, :half], name, ctx[i:i + 1, half:], rest]
        else:  # front
            parts = [prefix[i:i + 1], name, ctx[i:i + 1], rest]
        prompts.append(torch.cat(parts, dim=1))
    return torch.cat(prompts, dim=0)


class CustomCLIP(nn.Module):
    """Frozen CLIP with a prompt learner; takes images [B, 3, H, W] or cached features [B, D]."""

    def __init__(self, clip_model, prompt_learner, shared_prefix=True):
        super().__init__()
        self.prompt_learner = prompt_learner
        self.image_encoder = clip_model.visual
        self.text_encoder = TextEncoder(clip_model)
        self.logit_scale = clip_model.logit_scale
        self.dtype = clip_model.dtype
        self.shared_prefix = shared_prefix and supports_shared_prefix(clip_model.transformer)

    def text_features(self):
        """Normalised class features [n_cls, D]: every class in one text-encoder call."""
        learner = self.prompt_learner
        if self.shared_prefix and learner.class_token_position == "end" and learner.ctx.dim() == 2:
            prefix = torch.cat([learner.token_prefix[0], learner.ctx.to(learner.token_prefix.dtype)]).unsqueeze(0)
            text = self.text_encoder.forward_shared_prefix(prefix, learner.token_suffix, learner.tokenized_prompts)[0]
        else:
            text = self.text_encoder(learner(), learner.tokenized_prompts)
        return text / text.norm(dim=-1, keepdim=True)

    def forward(self, inputs, text_features=None):
        image_features = inputs if inputs.dim() == 2 else self.image_encoder(inputs.type(self.dtype))
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        if text_features is None:
            text_features = self.text_features()
        return self.logit_scale.exp() * image_features.to(text_features.dtype) @ text_features.t()


def select_classes(state_dict, indices, n_rows_key, n_cls):
    """Rows of the class-indexed tensors for a class subset (an ImageNet checkpoint on ImageNet-A/R)."""
    rows = state_dict.get(n_rows_key)
    if indices is None or rows is None or rows.dim() < 3 or rows.shape[0] == n_cls:
        return state_dict
    index = torch.as_tensor(indices, dtype=torch.long)
    return {k: (v.index_select(0, index) if k == n_rows_key else v) for k, v in state_dict.items()}


def adapt_prompt_state_dict(module, state_dict, path_hint="", ignored=()):
    """The original's load rule: drop token_prefix/token_suffix (use the current classes'), but
    raise on any other missing or unexpected key instead of ignoring it (strict=False hid typos).
    ``ignored``: keys an original saves but never uses (KgCoOp's unused ``bias_vectors``), dropped too."""
    dropped = sorted(k for k in state_dict if k in ignored)
    if dropped:
        logger.info("Checkpoint%s: ignoring %s (saved by the original, never used)", path_hint, ", ".join(dropped))
    state_dict = {k: v for k, v in state_dict.items() if k not in ("token_prefix", "token_suffix", *ignored)}
    own = {k for k in module.state_dict() if k not in ("token_prefix", "token_suffix")}
    missing, unexpected = sorted(own - set(state_dict)), sorted(set(state_dict) - own)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected)}")
        raise CheckpointError(f"Checkpoint{path_hint} does not hold this prompt learner's weights "
                              f"({'; '.join(parts)}); was it saved by another trainer?")
    for key in ("token_prefix", "token_suffix"):
        state_dict[key] = getattr(module, key)
    return state_dict


class PromptTrainer(FrozenCLIPTrainer):
    """What CoOp and CoCoOp share: the prompt learner's registration, checkpoint adaptation, text
    features computed once per test (the step and its LR convention are the base's ``step``)."""

    reads_keys = ("MODEL.INIT_WEIGHTS",)  # a saved prompt learner to start from (Dassl's engine key)
    ignored_keys = ()  # prompt-learner keys of the method's original checkpoints that it never uses

    def register_prompt_learner(self):
        """Freeze all but the prompt learner, build its optimizer and scheduler, register it."""
        for name, param in self.model.named_parameters():
            param.requires_grad_("prompt_learner" in name)
        enabled = sorted(n for n, p in self.model.named_parameters() if p.requires_grad)
        logger.info("Parameters to be updated: %s", ", ".join(enabled))
        if self.cfg.MODEL.INIT_WEIGHTS:  # start from a saved prompt learner (the original's load_pretrained_weights)
            path = self.cfg.MODEL.INIT_WEIGHTS
            checkpoint = load_checkpoint(path)
            state_dict = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else checkpoint
            learner = self.model.prompt_learner
            learner.load_state_dict(adapt_prompt_state_dict(learner, state_dict, f" {path} (MODEL.INIT_WEIGHTS)",
                                                            self.ignored_keys))
            logger.info("Initialized the prompt learner from %s", path)
        self.optim = build_optimizer(self.model.prompt_learner, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model("prompt_learner", self.model.prompt_learner, self.optim, self.sched)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.prec == "amp" else None

    def adapt_state_dict(self, name, state_dict):
        learner = self._models[name]
        indices = getattr(self.dm.dataset, "class_indices_in_imagenet", None)
        state_dict = select_classes(state_dict, indices, "ctx", learner.n_cls)
        return adapt_prompt_state_dict(learner, state_dict, f" of {name}", self.ignored_keys)


@TRAINER_REGISTRY.register()
class CoOp(ClassTextOncePerTest, PromptTrainer):
    """Context Optimization; see the module docstring."""

    # The comparison runs the README's main setting: 16 context tokens, one unified context, the
    # class token at the end, with CoOp's per-shot epochs.
    protocol = Protocol(
        label="CoOp",
        config=coop_schedule,
        variants=(Variant("", opts=("TRAINER.COOP.N_CTX", "16", "TRAINER.COOP.CSC", "False",
                                    "TRAINER.COOP.CLASS_TOKEN_POSITION", "end"),
                          folder="_nctx16_cscFalse_ctpend"),),
        evaluations=("dg", "base2new"),
        extra={"locked_opts": ("TRAINER.COOP.",)},
        source="KaiyangZhou/CoOp COOP.md (1 shot 50 epochs, 2/4 100, 8/16 200; ImageNet 50)",
        order=40,
    )

    def trainer_cfg(self):
        return self.cfg.TRAINER.COOP

    def check_cfg(self, cfg):
        c = cfg.TRAINER.COOP
        check_prompt_cfg("COOP", c.N_CTX, c.CTX_INIT, c.PREC, c.CLASS_TOKEN_POSITION)

    def build_model(self):
        clip_model = self.load_clip()
        check_image_size(self.cfg, clip_model)
        logger.info("Building custom CLIP")
        self.model = self.build_prompt_model(clip_model).to(self.device)
        logger.info("Turning off gradients in both the image and the text encoder")
        self.register_prompt_learner()
        self._eval_text = None
        self.use_feature_cache()

    def build_prompt_model(self, clip_model):
        """The CustomCLIP to train (KgCoOp and ProGrad build theirs from the same parts)."""
        c = self.cfg.TRAINER.COOP
        learner = PromptLearner(self.dm.dataset.classnames, clip_model, n_ctx=c.N_CTX, ctx_init=c.CTX_INIT,
                                csc=c.CSC, class_token_position=c.CLASS_TOKEN_POSITION)
        return CustomCLIP(clip_model, learner)

