"""CLIP-Adapter as a trainer (``CLIP_Adapter``, the original's registered name).

The adapter (``trainers/methods/clip_adapter.py``) trains on cached image features; the text
side is the dataset's CoOp template with ``_`` read as a space, encoded once (the original
re-encodes the same frozen prompts every step: same values). Only the module ``clip_adapter``
(the adapter itself, as in the original) is optimised, saved and loaded. The original runs CLIP
in fp32 (``clip_model.float()``), hence PREC fp32 by default. Its repository ships no configs and
says to run it with CoOp's commands: ``configs/trainers/CLIP_Adapter/`` are CoOp's schedules.

Keys (``TRAINER.CLIP_ADAPTER``): RATIO (0.2, the original's hard-coded blend), REDUCTION (4),
PREC (fp32 | fp16 | amp).
"""
import logging

import torch
import torch.nn as nn
from yacs.config import CfgNode as CN

from engine import TRAINER_REGISTRY
from engine.errors import ConfigError
from engine.optim import build_lr_scheduler, build_optimizer
from engine.protocol import Protocol, coop_schedule

from .clip_trainer import PRECISIONS, FrozenCLIPTrainer
from .methods.clip_adapter import Adapter, adapter_logits
from .templates import CUSTOM_TEMPLATES, DEFAULT_TEMPLATE
from .text_features import prompt_features

logger = logging.getLogger(__name__)


def extend_cfg(cfg):
    cfg.TRAINER.CLIP_ADAPTER = CN()
    cfg.TRAINER.CLIP_ADAPTER.RATIO = 0.2  # residual blend: ratio * adapter(x) + (1 - ratio) * x
    cfg.TRAINER.CLIP_ADAPTER.REDUCTION = 4  # bottleneck width = embed_dim // REDUCTION
    cfg.TRAINER.CLIP_ADAPTER.PREC = "fp32"  # the original casts CLIP to fp32


class CustomCLIP(nn.Module):
    """Frozen CLIP image encoder + the adapter over fixed text features; takes images or features."""

    def __init__(self, clip_model, text_features, ratio, reduction):
        super().__init__()
        self.image_encoder = clip_model.visual
        self.logit_scale = clip_model.logit_scale
        self.dtype = next(clip_model.visual.parameters()).dtype
        self.ratio = ratio
        self.register_buffer("text_features", text_features)
        self.adapter = Adapter(text_features.shape[1], reduction).to(self.dtype)

    def forward(self, inputs):
        feats = inputs if inputs.dim() == 2 else self.image_encoder(inputs.type(self.dtype))
        feats = feats.to(self.dtype)
        return adapter_logits(feats, self.adapter, self.text_features.to(self.dtype), self.ratio, self.logit_scale.exp())


@TRAINER_REGISTRY.register()
class CLIP_Adapter(FrozenCLIPTrainer):  # noqa: N801 - the original's registered name
    """CLIP-Adapter; see the module docstring."""

    # Its repository says to run it with CoOp's commands: CoOp's per-shot epochs
    protocol = Protocol(label="CLIP-Adapter", config=coop_schedule, evaluations=("dg",),
                        source="gaopengcuhk/CLIP-Adapter README (CoOp's scripts)", order=60)

    def trainer_cfg(self):
        return self.cfg.TRAINER.CLIP_ADAPTER

    def check_cfg(self, cfg):
        tcfg = cfg.TRAINER.CLIP_ADAPTER
        if tcfg.PREC not in PRECISIONS:
            raise ConfigError(f"TRAINER.CLIP_ADAPTER.PREC must be one of {', '.join(PRECISIONS)}, got {tcfg.PREC!r}.")
        if not isinstance(tcfg.RATIO, (int, float)) or not 0 <= tcfg.RATIO <= 1:
            raise ConfigError(f"TRAINER.CLIP_ADAPTER.RATIO must be a number in [0, 1] (the original uses 0.2), got {tcfg.RATIO!r}.")
        if not isinstance(tcfg.REDUCTION, int) or tcfg.REDUCTION < 1:
            raise ConfigError(f"TRAINER.CLIP_ADAPTER.REDUCTION must be a positive integer (the original uses 4), got {tcfg.REDUCTION!r}.")

    def build_model(self):
        cfg = self.cfg
        tcfg = cfg.TRAINER.CLIP_ADAPTER
        clip_model = self.load_clip()
        if clip_model.embed_dim // tcfg.REDUCTION < 1:
            raise ConfigError(f"TRAINER.CLIP_ADAPTER.REDUCTION {tcfg.REDUCTION} leaves no hidden unit for this backbone's "
                              f"{clip_model.embed_dim}-d features; use a value <= {clip_model.embed_dim}.")
        template = CUSTOM_TEMPLATES.get(cfg.DATASET.NAME, DEFAULT_TEMPLATE)
        classnames = [c.replace("_", " ") for c in self.dm.dataset.classnames]
        logger.info("Prompt template: %s", template)
        text = prompt_features(clip_model, classnames, [template])[0]
        self.model = CustomCLIP(clip_model, text, tcfg.RATIO, tcfg.REDUCTION).to(self.device)
        logger.info("Turning off gradients in both the image and the text encoder")
        for name, param in self.model.named_parameters():
            param.requires_grad_("adapter" in name)
        self.optim = build_optimizer(self.model.adapter, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model("clip_adapter", self.model.adapter, self.optim, self.sched)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.prec == "amp" else None
        self.use_feature_cache()
