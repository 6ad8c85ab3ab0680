"""CoCoOp: Conditional Context Optimization (Zhou et al., CVPR 2022).

CoOp's context shifted per image by a small meta-network of the (normalised) image feature:

    ctx_i    = ctx + meta_net(normalize(f(image_i)))     meta_net: linear1 -> ReLU -> linear2
    logits_i = exp(logit_scale) * normalize(f(image_i)) @ normalize(TextEncoder(prompts(ctx_i)))^T

Keys (``TRAINER.COCOOP``): N_CTX, CTX_INIT, PREC. The state dict of ``prompt_learner`` holds
``ctx``, ``meta_net.linear1.*``, ``meta_net.linear2.*``, ``token_prefix``, ``token_suffix``, as in
the original. The text side of a batch runs in one text-encoder call over (image, class)
pairs, which gives the same features as the original's loop over images; the start of each
prompt (SOS + the image's context) is shared by all classes and runs once per image. Base-to-new: train
with ``DATASET.SUBSAMPLE_CLASSES base``, evaluate the checkpoint with ``new``.
"""
import logging
from collections import OrderedDict

import torch
import torch.nn as nn
from yacs.config import CfgNode as CN

from engine import TRAINER_REGISTRY
from engine.protocol import Protocol

from .coop import (PromptTrainer, TextEncoder, check_image_size, check_prompt_cfg, class_prompt_embeddings,
                   init_context, supports_shared_prefix)

logger = logging.getLogger(__name__)

# (image, class) prompts per text-encoder call: bounds memory for large batches x many classes.
TEXT_CHUNK = 4096


def extend_cfg(cfg):
    """TRAINER.COCOOP with the original's keys and defaults."""
    cfg.TRAINER.COCOOP = CN()
    cfg.TRAINER.COCOOP.N_CTX = 16  # number of context vectors
    cfg.TRAINER.COCOOP.CTX_INIT = ""  # initialization words
    cfg.TRAINER.COCOOP.PREC = "fp16"  # fp16, fp32, amp


class PromptLearner(nn.Module):
    """Context vectors, the meta-network, and the frozen token embeddings; forward(image features)
    -> prompts [B, n_cls, 77, width]."""

    def __init__(self, classnames, clip_model, n_ctx=16, ctx_init="", half=False):
        super().__init__()
        dtype = clip_model.dtype
        vis_dim = clip_model.visual.output_dim
        ctx, prompt_prefix, n_ctx = init_context(clip_model, n_ctx, ctx_init, (), dtype)
        logger.info('Initial context: "%s"', prompt_prefix)
        logger.info("Number of context words (tokens): %d", n_ctx)
        self.ctx = nn.Parameter(ctx)
        width = clip_model.ln_final.weight.shape[0]
        self.meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(vis_dim, vis_dim // 16)),
            ("relu", nn.ReLU(inplace=True)),
            ("linear2", nn.Linear(vis_dim // 16, width)),
        ]))
        if half:
            self.meta_net.half()

        tokenized, embedding, name_lens = class_prompt_embeddings(clip_model, classnames, prompt_prefix, dtype)
        self.register_buffer("token_prefix", embedding[:, :1, :])  # SOS
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx:, :])  # CLASS, ".", EOS, padding
        self.register_buffer("tokenized_prompts", tokenized, persistent=False)
        self.n_cls = len(classnames)
        self.n_ctx = n_ctx
        self.name_lens = name_lens

    def context(self, image_features):
        """The image-conditioned contexts [B, n_ctx, width]."""
        return self.ctx.unsqueeze(0) + self.meta_net(image_features).unsqueeze(1)

    def forward(self, image_features):
        ctx = self.context(image_features)
        batch = ctx.shape[0]
        ctx = ctx.unsqueeze(1).expand(-1, self.n_cls, -1, -1)  # [B, n_cls, n_ctx, width]
        prefix = self.token_prefix.unsqueeze(0).expand(batch, -1, -1, -1)
        suffix = self.token_suffix.unsqueeze(0).expand(batch, -1, -1, -1)
        return torch.cat([prefix, ctx, suffix], dim=2)


class CustomCLIP(nn.Module):
    """Frozen CLIP with CoCoOp's prompt learner; takes images [B, 3, H, W] or cached features [B, D]."""

    def __init__(self, clip_model, prompt_learner, shared_prefix=True):
        super().__init__()
        self.prompt_learner = prompt_learner
        self.image_encoder = clip_model.visual
        self.text_encoder = TextEncoder(clip_model)
        self.logit_scale = clip_model.logit_scale
        self.dtype = clip_model.dtype
        self.shared_prefix = shared_prefix and supports_shared_prefix(clip_model.transformer)

    def forward(self, inputs):
        image_features = inputs if inputs.dim() == 2 else self.image_encoder(inputs.type(self.dtype))
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        learner = self.prompt_learner
        if self.shared_prefix:
            # each image's context is shared by all classes: one prefix per image (exact, see coop)
            ctx = learner.context(image_features.to(learner.ctx.dtype))  # [B, n_ctx, width]
            sos = learner.token_prefix[0].unsqueeze(0).expand(ctx.shape[0], -1, -1)
            prefix = torch.cat([sos, ctx.to(sos.dtype)], dim=1)
            step = max(1, TEXT_CHUNK // learner.n_cls)
            text = torch.cat([self.text_encoder.forward_shared_prefix(prefix[i:i + step], learner.token_suffix,
                                                                      learner.tokenized_prompts)
                              for i in range(0, prefix.shape[0], step)])
        else:
            prompts = learner(image_features.to(learner.ctx.dtype))
            batch, n_cls = prompts.shape[:2]
            flat = prompts.reshape(batch * n_cls, *prompts.shape[2:])
            tokens = learner.tokenized_prompts.repeat(batch, 1)
            text = torch.cat([self.text_encoder(flat[i:i + TEXT_CHUNK], tokens[i:i + TEXT_CHUNK])
                              for i in range(0, flat.shape[0], TEXT_CHUNK)]).view(batch, n_cls, -1)
        text = text / text.norm(dim=-1, keepdim=True)
        logits = torch.einsum("bd,bkd->bk", image_features.to(text.dtype), text)
        return self.logit_scale.exp() * logits


@TRAINER_REGISTRY.register()
class CoCoOp(PromptTrainer):
    """Conditional Context Optimization; see the module docstring."""

    # CoCoOp's one published config (ViT-B/16 settings, 4 context tokens, 10 epochs, batch 1) at every shot count
    protocol = Protocol(label="CoCoOp", config="vit_b16_c4_ep10_batch1_ctxv1", evaluations=("dg", "base2new"),
                        extra={"locked_opts": ("TRAINER.COCOOP.",)},
                        source="KaiyangZhou/CoOp COCOOP.md", order=50)

    def trainer_cfg(self):
        return self.cfg.TRAINER.COCOOP

    def check_cfg(self, cfg):
        c = cfg.TRAINER.COCOOP
        check_prompt_cfg("COCOOP", c.N_CTX, c.CTX_INIT, c.PREC)

    def build_model(self):
        cfg, c = self.cfg, self.cfg.TRAINER.COCOOP
        clip_model = self.load_clip()
        check_image_size(cfg, clip_model)
        logger.info("Building custom CLIP")
        learner = PromptLearner(self.dm.dataset.classnames, clip_model, n_ctx=c.N_CTX, ctx_init=c.CTX_INIT,
                                half=self.prec == "fp16")
        self.model = CustomCLIP(clip_model, learner).to(self.device)
        logger.info("Turning off gradients in both the image and the text encoder")
        self.register_prompt_learner()
        self.use_feature_cache()

