"""TaskRes: Task Residual Tuning for CLIP (Yu et al., CVPR 2023).

    t' = t + alpha * x        t: frozen base classifier (raw CLIP text features of the class
                                 prompts, averaged over templates), x: learnable residual (zeros)
    logits = exp(logit_scale) * normalize(image) @ normalize(t')^T,  loss = cross-entropy

Only ``prompt_learner`` (holding ``base_text_features`` as a buffer and
``text_feature_residuals`` as the one parameter) is optimised, saved and loaded. The
TaskRes-Image variant (``TRAINER.TaskRes.VARIANT image``) learns one residual row added to the
image features instead. An enhanced base (``--enhanced-base FILE``) swaps CLIP's text projection
for a tuned one before the base is computed, in every precision.
"""
import logging
import os

import torch
import torch.nn as nn
from yacs.config import CfgNode as CN

from engine import TRAINER_REGISTRY
from engine.config import unused_key
from engine.errors import CheckpointError, ConfigError
from engine.protocol import Protocol, Variant
from engine.utils.checkpoint import load_checkpoint

from .clip_trainer import FrozenCLIPTrainer, cosine_logits, encode_if_images
from .strong_base import check_made_from
from .templates import base_templates
from .text_features import prompt_features

logger = logging.getLogger(__name__)

VARIANTS = ("text", "image")


def extend_cfg(cfg):
    """TRAINER.TaskRes with the original's keys and defaults."""
    cfg.TRAINER.TaskRes = CN()
    cfg.TRAINER.TaskRes.N_CTX = 16  # unused, kept from the original for config compatibility
    cfg.TRAINER.TaskRes.CSC = False  # unused, idem
    cfg.TRAINER.TaskRes.CTX_INIT = ""  # unused, idem
    cfg.TRAINER.TaskRes.CLASS_TOKEN_POSITION = "end"  # unused, idem
    cfg.TRAINER.TaskRes.PREC = "fp16"  # fp16 | fp32 | amp
    cfg.TRAINER.TaskRes.RESIDUAL_SCALE = 1.0  # alpha
    cfg.TRAINER.TaskRes.ENHANCED_BASE = "none"  # "none" or a strong_base/... model.pth.tar
    cfg.TRAINER.TaskRes.VARIANT = "text"  # text: TaskRes; image: TaskRes-Image
    for key in ("N_CTX", "CSC", "CTX_INIT", "CLASS_TOKEN_POSITION"):  # a changed value is refused, not ignored
        unused_key(f"TRAINER.TaskRes.{key}", cfg.TRAINER.TaskRes[key], "the original TaskRes defines it but never reads it")


def enhanced_base_missing(path):
    return CheckpointError(
        f"Enhanced base {path} not found; produce it with scripts/taskres/strong_base.sh (or download it) "
        "or pass --enhanced-base none.")


def load_enhanced_projection(path, width, embed_dim, cfg=None):
    """The tuned text projection [width, embed_dim] of an enhanced-base file (nn.Linear weight, transposed).

    With ``cfg``, a base made from other CLIP weights than the run's is refused (strong_base.check_made_from).
    """
    if not os.path.isfile(path):
        raise enhanced_base_missing(path)
    checkpoint = load_checkpoint(path)
    if cfg is not None:
        check_made_from(checkpoint, path, cfg)
    weight = checkpoint.get("state_dict", {}).get("weight") if isinstance(checkpoint, dict) else None
    if weight is None:
        raise CheckpointError(f"Enhanced base {path} has no state_dict['weight']; it must be a strong-base checkpoint.")
    if tuple(weight.shape) != (embed_dim, width):
        raise CheckpointError(
            f"Enhanced base {path} has a weight of shape {list(weight.shape)}, but this backbone needs "
            f"[{embed_dim}, {width}]; use the file made for this backbone.")
    return weight.t()


def build_base_text_features(clip_model, classnames, dataset_name, projection=None):
    """The base t: raw text features averaged over the dataset's templates, [num_classes, D]."""
    return prompt_features(clip_model, classnames, base_templates(dataset_name), projection=projection).mean(dim=0)


class TaskResLearner(nn.Module):
    """forward() = base + alpha * residual (the task-adapted classifier)."""

    def __init__(self, base_text_features, alpha):
        super().__init__()
        self.alpha = alpha
        self.register_buffer("base_text_features", base_text_features)
        self.text_feature_residuals = nn.Parameter(torch.zeros_like(base_text_features))

    def forward(self):
        return self.base_text_features + self.alpha * self.text_feature_residuals


class ImageResidualLearner(nn.Module):
    """TaskRes-Image: one residual row added to every image feature; the text base stays fixed."""

    def __init__(self, base_text_features, alpha):
        super().__init__()
        self.alpha = alpha
        self.register_buffer("base_text_features", base_text_features)
        self.image_feature_residuals = nn.Parameter(torch.zeros(1, base_text_features.shape[1], dtype=base_text_features.dtype))

    def forward(self):
        return self.base_text_features

    def adapt_image(self, image_features):
        return image_features + self.alpha * self.image_feature_residuals


class CustomCLIP(nn.Module):
    """Frozen CLIP image encoder + a learner producing the classifier; takes images or features."""

    def __init__(self, clip_model, prompt_learner):
        super().__init__()
        self.image_encoder = clip_model.visual
        self.prompt_learner = prompt_learner
        self.logit_scale = clip_model.logit_scale
        self.dtype = next(clip_model.visual.parameters()).dtype

    def forward(self, inputs):
        image_features = encode_if_images(lambda images: self.image_encoder(images.type(self.dtype)), inputs)
        if hasattr(self.prompt_learner, "adapt_image"):
            image_features = self.prompt_learner.adapt_image(image_features)
        return cosine_logits(image_features, self.prompt_learner(), self.logit_scale)


def taskres_schedule(dataset, shots, family=None):
    """The original scripts' config of a run: ImageNet lr 2e-4, the others 2e-3; up to 4 shots
    100 epochs, more shots 200."""
    lr = "2e-4" if dataset == "imagenet" else "2e-3"
    return f"adam_lr{lr}_B256_ep{100 if shots <= 4 else 200}"


def taskres_alpha(dataset):
    """Residual scale alpha of the original scripts: 1.0 for OxfordFlowers, 0.5 elsewhere."""
    return "1.0" if dataset == "oxford_flowers" else "0.5"


# Generalization (DG evaluation) config per backbone tag; a weights file evaluates with its training config.
DG_CONFIGS = {"rn50": "generalization_rn50", "rn101": "generalization_rn101", "vitb16": "generalization_vit16",
              "vitb32": "generalization_vit32"}
ALPHA_OPTS = ("TRAINER.TaskRes.RESIDUAL_SCALE", "{alpha}")


@TRAINER_REGISTRY.register()
class TaskRes(FrozenCLIPTrainer):
    """Task Residual Tuning; see the module docstring."""

    training_free = False
    protocol = Protocol(
        label="TaskRes",
        config=taskres_schedule,
        variants=(
            Variant("", flags=("--enhanced-base", "none"), opts=ALPHA_OPTS, folder="_regular-base_alpha{alpha}",
                    label="TaskRes (regular base)"),
            # the enhanced base of (dataset, shots) comes from a StrongBase run, made first
            Variant("enhanced", flags=("--enhanced-base", "{needs}"), opts=ALPHA_OPTS,
                    folder="_enhanced-base_alpha{alpha}", label="TaskRes (enhanced base)", needs=("StrongBase",)),
        ),
        evaluations=("dg",),
        # the backbone of a run is its config's MODEL.BACKBONE.NAME unless --backbone names one
        extra={"alpha": taskres_alpha, "dg_configs": DG_CONFIGS, "backbone_from_config": True},
        source="geekyutao/TaskRes scripts/main.sh, eval.sh (per-shot config, alpha 0.5, flowers 1.0)",
        order=90,
    )

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        if cfg.TRAINER.TaskRes.VARIANT not in VARIANTS:
            raise ConfigError(f"TRAINER.TaskRes.VARIANT must be one of {', '.join(VARIANTS)}, got {cfg.TRAINER.TaskRes.VARIANT!r}.")

    def build_head(self, clip_model):
        cfg = self.cfg
        tcfg = cfg.TRAINER.TaskRes
        classnames = self.dm.dataset.classnames
        projection = None
        enhanced = tcfg.ENHANCED_BASE
        self._base_needs = None  # an enhanced-base file that is missing: a checkpoint must bring the base
        if enhanced and enhanced.lower() != "none":
            if os.path.isfile(enhanced):
                width = clip_model.text_projection.shape[0]
                projection = load_enhanced_projection(enhanced, width, clip_model.embed_dim, cfg)
                logger.info("Using the enhanced base from %s", enhanced)
            else:
                # A trained run's checkpoint holds its base (buffer base_text_features), so
                # evaluating or resuming it needs no file; a fresh training run does (before_train).
                self._base_needs = enhanced
                logger.warning("Enhanced base %s not found: the base comes from the checkpoint loaded next "
                               "(--model-dir or resume); training from scratch needs the file", enhanced)
        logger.info("Building the base classifier (%d classes)", len(classnames))
        base = build_base_text_features(clip_model, classnames, cfg.DATASET.NAME, projection).to(self.dtype)

        learner_cls = TaskResLearner if tcfg.VARIANT == "text" else ImageResidualLearner
        return CustomCLIP(clip_model, learner_cls(base, tcfg.RESIDUAL_SCALE))

    def trainable_modules(self):
        return {"prompt_learner": self.model.prompt_learner}

    def load_model(self, directory, epoch=None):
        super().load_model(directory, epoch)
        if directory:
            self._base_needs = None  # the checkpoint's base_text_features replaced the placeholder

    def before_train(self):
        super().before_train()  # resumes from the last checkpoint (base included) when there is one
        if self._base_needs and self.start_epoch == 0:
            raise enhanced_base_missing(self._base_needs)

    def adapt_state_dict(self, name, state_dict):
        """Evaluate a 1000-class ImageNet checkpoint on ImageNet-A/R by selecting their rows."""
        indices = getattr(self.dm.dataset, "class_indices_in_imagenet", None)
        rows = state_dict.get("base_text_features")
        if indices is None or rows is None or rows.shape[0] == self.num_classes:
            return state_dict
        logger.info("Selecting the %d classes of %s from a %d-class checkpoint", len(indices), self.cfg.DATASET.NAME, rows.shape[0])
        index = torch.as_tensor(indices, dtype=torch.long)
        return {k: (v.index_select(0, index) if v.dim() == 2 and v.shape[0] == rows.shape[0] else v)
                for k, v in state_dict.items()}
