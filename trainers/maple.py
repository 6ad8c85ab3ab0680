"""MaPLe: Multi-modal Prompt Learning (Khattak et al., CVPR 2023), the original's ``MaPLe`` trainer.

Learnt text context tokens are projected into the image tower, so both towers are prompted by one
source, in the first ``PROMPT_DEPTH`` layers (J in the paper):

    prompts      = [SOS] ctx_1..ctx_n [rest of "CTX_INIT <class>."]         text input, as CoOp's
    visual       = proj(ctx)                      [n, W_vision]             appended after the patches
    deep j=1..J-1: text block j's context slots  <- compound_prompts_text[j-1]
                   vision block j's prompt slots <- compound_prompt_projections[j-1](compound_prompts_text[j-1])
    logits       = exp(logit_scale) * normalize(image) @ normalize(text)^T,  cross-entropy

Keys (``TRAINER.MAPLE``, the original's defaults): N_CTX 2, CTX_INIT "a photo of a", PREC fp16,
PROMPT_DEPTH 9. As the original, CTX_INIT is used only when N_CTX <= 4, and then its first N_CTX
tokens initialise the context while the rest of its words stay in the prompt as fixed text ("a photo"
learnt, "of a <class>." fixed for the defaults); otherwise the context is random and the prompt
"X X .. <class>.". Depth 1 is "shallow" MaPLe (no deep prompts).

The prompts enter the image encoder's blocks, so MaPLe trains end to end (no feature cache; one
log line says so). Checkpoints: the model is registered as ``MultiModalPromptLearner`` with the
original's keys (``prompt_learner.ctx``, ``prompt_learner.proj.*``,
``prompt_learner.compound_prompts_text.<j>``, ``prompt_learner.compound_prompt_projections.<j>.*``,
``prompt_learner.token_prefix/suffix``), so its checkpoints load here (the frozen CLIP weights the
original also saves are ignored) and ours load there. Widths come from the loaded CLIP (the original
hard-codes ViT-B/16's 512 and 768). Deliberate differences, each marked "original:" below.
"""
import copy
import logging

import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from engine import TRAINER_REGISTRY
from engine.errors import CheckpointError, ConfigError
from engine.metrics import compute_accuracy
from engine.protocol import Protocol
from engine.utils.checkpoint import load_pretrained_weights

from .clip_trainer import PRECISIONS, FrozenCLIPTrainer
from .coop import TextEncoder, check_image_size, class_prompt_embeddings
from .deep_prompts import initial_context, prompted_text, prompted_vit, require_vit

logger = logging.getLogger(__name__)

MODEL_NAME = "MultiModalPromptLearner"  # the original's registered name: its checkpoint folder
# What an original checkpoint holds besides the learner (it saves the whole CustomCLIP): frozen CLIP
FROZEN_PREFIXES = ("image_encoder.", "text_encoder.", "logit_scale")
SOURCE = ("muzairkhattak/multimodal-prompt-learning 69bce21: configs/trainers/MaPLe/*.yaml, "
          "scripts/maple/{base2new,xd}_train_maple.sh (16 shots; cross-dataset/DG trained on ImageNet)")


def extend_cfg(cfg):
    """TRAINER.MAPLE with the original's keys and defaults (its train.py ``extend_cfg``)."""
    cfg.TRAINER.MAPLE = CN()
    cfg.TRAINER.MAPLE.N_CTX = 2  # number of context vectors
    cfg.TRAINER.MAPLE.CTX_INIT = "a photo of a"  # initialization words
    cfg.TRAINER.MAPLE.PREC = "fp16"  # fp16, fp32, amp
    cfg.TRAINER.MAPLE.PROMPT_DEPTH = 9  # max 12; 1 = shallow MaPLe (J=1)


def maple_config(dataset, shots, family):
    """The published config: base-to-new (every dataset, 16 shots) uses vit_b16_c2_ep5_batch4_2ctx; the
    cross-dataset/DG source run (ImageNet) uses its _cross_datasets sibling (``extra['dg_config']``)."""
    if not family.startswith("vit"):
        raise ValueError(f"MaPLe prompts a ViT's layers; it publishes ViT-B/16 settings only, not {family!r}")
    return "vit_b16_c2_ep5_batch4_2ctx"


def check_maple_cfg(m):
    if m.PREC not in PRECISIONS:
        raise ConfigError(f"TRAINER.MAPLE.PREC must be one of {', '.join(PRECISIONS)}, got {m.PREC!r}.")
    if not isinstance(m.PROMPT_DEPTH, int) or m.PROMPT_DEPTH < 1:  # original: an assert
        raise ConfigError(f"TRAINER.MAPLE.PROMPT_DEPTH must be a whole number of at least 1 (1 = shallow MaPLe), "
                          f"got {m.PROMPT_DEPTH!r}.")
    if not isinstance(m.N_CTX, int) or m.N_CTX < 1:
        raise ConfigError(f"TRAINER.MAPLE.N_CTX must be a whole number of at least 1, got {m.N_CTX!r}.")


class MultiModalPromptLearner(nn.Module):
    """The text context, its projection into the image tower, the deep prompts and their projections."""

    def __init__(self, classnames, clip_model, n_ctx=2, ctx_init="a photo of a", depth=9):
        super().__init__()
        dtype = clip_model.dtype
        text_width = clip_model.ln_final.weight.shape[0]
        vision_width = clip_model.visual.conv1.weight.shape[0]
        # as the original: the first n_ctx tokens of CTX_INIT are learnt, its other words stay as text
        ctx, prompt_prefix = initial_context(clip_model, n_ctx, ctx_init, dtype)
        logger.info("MaPLe design: Multi-modal Prompt Learning")
        logger.info('Initial context: "%s"', prompt_prefix)
        logger.info("Number of MaPLe context words (tokens): %d", n_ctx)
        # original: proj.half() at every PREC (its fp32 runs fail); here it follows the model's dtype
        self.proj = nn.Linear(text_width, vision_width).type(dtype)
        self.ctx = nn.Parameter(ctx)
        # deep prompts and their projections stay fp32 (as the original); cast where they are used
        self.compound_prompts_text = nn.ParameterList(
            [nn.Parameter(torch.empty(n_ctx, text_width)) for _ in range(depth - 1)])
        for prompt in self.compound_prompts_text:
            nn.init.normal_(prompt, std=0.02)
        # as the original: one random layer, cloned, so every depth starts from the same projection
        single = nn.Linear(text_width, vision_width)
        self.compound_prompt_projections = nn.ModuleList([copy.deepcopy(single) for _ in range(depth - 1)])

        tokenized, embedding, name_lens = class_prompt_embeddings(clip_model, classnames, prompt_prefix, dtype)
        # saved with the checkpoint (as the original) but not loaded: the current classes' are right
        self.register_buffer("token_prefix", embedding[:, :1, :])  # SOS
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx:, :])  # rest of the prompt, EOS
        self.register_buffer("tokenized_prompts", tokenized, persistent=False)
        self.n_cls = len(classnames)
        self.n_ctx = n_ctx
        self.name_lens = name_lens

    def forward(self):
        """(text prompts [n_cls, L, W_text], visual prompt [n, W_vision], deep text prompts, deep visual prompts)."""
        ctx = self.ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
        prompts = torch.cat([self.token_prefix, ctx, self.token_suffix], dim=1)
        deep_visual = [layer(prompt) for layer, prompt in zip(self.compound_prompt_projections,
                                                               self.compound_prompts_text)]
        return prompts, self.proj(self.ctx), list(self.compound_prompts_text), deep_visual


class Checkpointed(nn.Module):
    """What is trained and saved: the learner under the original's key prefix ``prompt_learner.``."""

    def __init__(self, prompt_learner):
        super().__init__()
        self.prompt_learner = prompt_learner


class CustomCLIP(nn.Module):
    """Frozen CLIP prompted by MaPLe's learner in both towers; takes images [B, 3, H, W]."""

    def __init__(self, clip_model, prompt_learner):
        super().__init__()
        self.prompt_learner = prompt_learner
        self.image_encoder = clip_model.visual
        self.text_encoder = TextEncoder(clip_model)
        self.logit_scale = clip_model.logit_scale
        self.dtype = clip_model.dtype

    def text_features(self, prompts):
        """Normalised class features [n_cls, D] from the learner's output."""
        text_prompts, _, deep_text, _ = prompts
        text = prompted_text(self.text_encoder, text_prompts, self.prompt_learner.tokenized_prompts, deep_text)
        return text / text.norm(dim=-1, keepdim=True)

    def image_features(self, images, prompts):
        """Normalised prompted image features [B, D]."""
        _, visual, _, deep_visual = prompts
        image = prompted_vit(self.image_encoder, images.type(self.dtype), visual, deep_visual, position="end",
                             norm_prompts=True)
        return image / image.norm(dim=-1, keepdim=True)

    def forward(self, images, prompts=None, text_features=None):
        if prompts is None:
            prompts = self.prompt_learner()
        if text_features is None:
            text_features = self.text_features(prompts)
        image = self.image_features(images, prompts)
        return self.logit_scale.exp() * image.to(text_features.dtype) @ text_features.t()


def adapt_checkpoint(module, state_dict, source, method="MaPLe", frozen_prefixes=FROZEN_PREFIXES, optional=()):
    """An original or our checkpoint for ``module`` (a Checkpointed): its learnt keys, the current classes'
    token prefix/suffix, the original's frozen CLIP copy dropped; a missing or unknown key is an error.
    Keys starting with an ``optional`` prefix (ours only, e.g. PromptSRC's running average) keep the
    module's values when the checkpoint has none."""
    tokens = {f"prompt_learner.{n}" for n in ("token_prefix", "token_suffix")}
    own = set(module.state_dict()) - tokens
    kept = {k: v for k, v in state_dict.items() if k in own}
    frozen = [k for k in state_dict if k not in own and k.startswith(frozen_prefixes)]
    unexpected = sorted(set(state_dict) - own - set(frozen) - tokens)
    current = module.state_dict()
    for key in own - set(kept):
        if key.startswith(optional) if optional else False:
            kept[key] = current[key]
    missing = sorted(own - set(kept))
    if missing or unexpected:
        parts = ([f"missing {', '.join(missing[:5])}"] if missing else []) + (
            [f"unexpected {', '.join(unexpected[:5])}"] if unexpected else [])
        raise CheckpointError(f"Checkpoint {source} does not hold this {method} learner ({'; '.join(parts)}); was it "
                              "saved by another trainer, or with other prompt depths?")
    if frozen:
        logger.info("Checkpoint %s: %d frozen CLIP tensors (saved by the original) ignored; the backbone comes "
                    "from MODEL.BACKBONE", source, len(frozen))
    for key in tokens:
        kept[key] = current[key]
    return kept


@TRAINER_REGISTRY.register()
class MaPLe(FrozenCLIPTrainer):
    """Multi-modal prompt learning, end to end; see the module docstring."""

    protocol = Protocol(
        label="MaPLe",
        config=maple_config,
        evaluations=("base2new", "dg"),
        end_to_end=True,
        extra={"shots": (16,), "families": ("vit_b16",), "dg_config": "vit_b16_c2_ep5_batch4_2ctx_cross_datasets",
               "dg_source": "imagenet", "load_epoch": {"base2new": 5, "dg": 2}},
        source=SOURCE,
    )
    reads_keys = ("MODEL.INIT_WEIGHTS",)  # a saved learner to start from (the original's load_pretrained_weights)

    def trainer_cfg(self):
        return self.cfg.TRAINER.MAPLE

    def check_cfg(self, cfg):
        check_maple_cfg(cfg.TRAINER.MAPLE)  # first: it names the group as the config does (MAPLE)
        super().check_cfg(cfg)

    def build_model(self):
        cfg, m = self.cfg, self.cfg.TRAINER.MAPLE
        clip_model = self.load_clip()
        require_vit("MaPLe", cfg, clip_model)
        check_image_size(cfg, clip_model)
        self.configure_input()
        layers = min(len(clip_model.visual.transformer.resblocks), len(clip_model.transformer.resblocks))
        if m.PROMPT_DEPTH > layers:  # as the original: the extra prompts exist but no block uses them
            logger.warning("TRAINER.MAPLE.PROMPT_DEPTH %d is more than the %d layers of %s: prompts %d..%d are "
                           "never used", m.PROMPT_DEPTH, layers, cfg.MODEL.BACKBONE.NAME, layers, m.PROMPT_DEPTH - 1)
        logger.info("Building custom CLIP")
        learner = MultiModalPromptLearner(self.dm.dataset.classnames, clip_model, m.N_CTX, m.CTX_INIT,
                                          m.PROMPT_DEPTH)
        self.model = CustomCLIP(clip_model, learner).to(self.device)
        self.checkpointed = Checkpointed(self.model.prompt_learner)
        if cfg.MODEL.INIT_WEIGHTS:  # Dassl's rule: every tensor whose name and shape match
            load_pretrained_weights(self.checkpointed, cfg.MODEL.INIT_WEIGHTS)
        self.register_trainable()
        enabled = sorted(f"prompt_learner.{n}" for n, p in learner.named_parameters() if p.requires_grad)
        logger.info("Parameters to be updated: %s", ", ".join(enabled))
        logger.info("Feature cache off: MaPLe's prompts enter the image encoder's blocks (PROMPT_DEPTH %d), so "
                    "the image encoder runs in the loop (end to end)", m.PROMPT_DEPTH)
        self._eval_prompts = None

    def trainable_modules(self):
        return {MODEL_NAME: self.checkpointed}

    def forward_backward(self, batch):
        images, label = self.parse_batch_train(batch)

        def loss_fn():
            output = self.model(images)
            return F.cross_entropy(output.float(), label), output

        loss, output = self.step(loss_fn)
        return {"loss": loss.item(), "acc": compute_accuracy(output, label)[0].item()}

    @torch.no_grad()
    def test(self, split=None):
        self._eval_prompts = None  # the prompts do not change during a test: build them once
        try:
            return super().test(split)
        finally:
            self._eval_prompts = None

    def model_inference(self, inputs):
        if self._eval_prompts is None:
            prompts = self.model.prompt_learner()
            self._eval_prompts = (prompts, self.model.text_features(prompts))
        return self.model(inputs, *self._eval_prompts)

    def adapt_state_dict(self, name, state_dict):
        return adapt_checkpoint(self._models[name], state_dict, f"of {name}")
