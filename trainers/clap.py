"""CLAP: CLass-Adaptive linear Probing, and ZS-LP, its zero-shot initialised linear probe
(Silva-Rodriguez et al., "A Closer Look at the Few-Shot Adaptation of Large Vision-Language Models",
CVPR 2024; jusiro/CLAP).

A linear probe on CLIP's image features whose class prototypes start at the zero-shot classifier
t (TaskRes's base: raw text features averaged over the dataset's templates) and are held near it
by a class-adaptive penalty:

    logits = exp(logit_scale) * normalize(f) @ normalize(w)^T,       w initialised to t (INIT ZS)
    loss   = cross-entropy(logits, y) + mean_k alpha_k * ||w_k - t_k||^2      (CONSTRAINT l2)
    alpha_k = mean over the training views of class k of softmax(zero-shot logits)_k

(how well zero-shot CLIP already knows class k). CONSTRAINT none is ZS-LP. Training runs on
AUG_VIEWS (the original's hard-coded 20) augmented views of every training image, pooled and
shuffled each epoch; an epoch is as many batches as the image loader would have (the original's
rule: with fewer images than a batch, one batch of the pooled views).

Keys (``TRAINER.CLAP``; the original's ``TRAINER.ADAPTER``): INIT (ZS | RANDOM), CONSTRAINT
(none | l2 | cosine, optionally ``_balanced`` (alpha 1), ``_corrected`` (alpha scaled to sum K) or
``_constant`` (alpha its mean)), AUG_VIEWS, PREC. Checkpoints: ``adapter/`` with ``prototypes``,
``base_text_features`` and ``logit_scale``, the original's keys.

Deliberate differences (README "Recent methods"): the training log reports loss and train accuracy
(the original also evaluates the whole test set at every batch, ``acc_test``); the views come from
the feature cache (seeded per image and view, so resume replays them); the original's other
INIT values (TR, ClipA, TipA, CrossModal) and the ``adaptative`` constraint are other methods
here (TaskRes, CLIP-Adapter, Tip-Adapter) or not provided, and are refused by name.
"""
import logging

import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from engine import TRAINER_REGISTRY
from engine.data.data_manager import epoch_generator
from engine.errors import ConfigError
from engine.metrics import compute_accuracy
from engine.protocol import Protocol, Variant

from .clip_trainer import FrozenCLIPTrainer, cosine_logits
from .taskres import build_base_text_features

logger = logging.getLogger(__name__)

INITS = ("ZS", "RANDOM")
DISTANCES = ("none", "l2", "cosine")
ALPHA_RULES = ("", "balanced", "corrected", "constant")


def extend_cfg(cfg):
    """TRAINER.CLAP with the original's keys and defaults (its TRAINER.ADAPTER group)."""
    cfg.TRAINER.CLAP = CN()
    cfg.TRAINER.CLAP.INIT = "ZS"  # ZS: prototypes start at the zero-shot classifier; RANDOM: Kaiming normal
    cfg.TRAINER.CLAP.CONSTRAINT = "l2"  # none (ZS-LP) | l2 (CLAP) | cosine, + _balanced/_corrected/_constant
    cfg.TRAINER.CLAP.AUG_VIEWS = 20  # augmented views per training image (hard-coded 20 in the original)
    cfg.TRAINER.CLAP.PREC = "fp16"  # the image encoder's; the probe itself runs in fp32, as the original's


def parse_constraint(value):
    """(distance, alpha rule) of a CONSTRAINT value, e.g. "l2" -> ("l2", ""), "l2_balanced" -> ("l2", "balanced")."""
    distance, _, rule = value.partition("_")
    if distance not in DISTANCES or rule not in ALPHA_RULES or (distance == "none" and rule):
        raise ConfigError(f"TRAINER.CLAP.CONSTRAINT must be none, l2 or cosine, optionally with _balanced, "
                          f"_corrected or _constant (e.g. l2_balanced), got {value!r}.")
    return distance, rule


def class_adaptive_weights(zero_shot_logits, labels, num_classes, rule=""):
    """alpha_k = mean over class k's samples of softmax(zero-shot logits)_k, then the rule's change."""
    if rule == "balanced":
        return torch.ones(num_classes)
    probs = zero_shot_logits.float().softmax(dim=-1)
    one_hot = F.one_hot(labels, num_classes).float()
    alpha = (probs * one_hot).sum(dim=0) / one_hot.sum(dim=0)
    if rule == "corrected":
        alpha = alpha * (num_classes / alpha.sum())
    elif rule == "constant":
        alpha = torch.full_like(alpha, alpha.mean().item())
    return alpha


class ClassAdaptiveProbe(nn.Module):
    """The probe: prototypes [K, D] (trained), the zero-shot base [K, D] and CLIP's logit scale."""

    def __init__(self, base_text_features, logit_scale, init="ZS"):
        super().__init__()
        base = base_text_features.float()
        self.register_buffer("logit_scale", logit_scale.detach().float().clone())
        self.register_buffer("base_text_features", base)
        self.prototypes = nn.Parameter(base.clone() if init == "ZS" else nn.init.kaiming_normal_(torch.empty_like(base)))
        # the penalty's class weights: set from the training set before training, never saved
        self.register_buffer("alpha_constraint", torch.zeros(base.shape[0]), persistent=False)

    def forward(self, image_features):
        return cosine_logits(image_features.float(), self.prototypes, self.logit_scale)

    def constraint(self, distance):
        """mean_k alpha_k * d(w_k, t_k), d = squared L2 distance or 1 - cosine."""
        if distance == "l2":
            gap = (self.prototypes - self.base_text_features).pow(2).sum(dim=-1)
        else:
            gap = 1 - F.cosine_similarity(self.prototypes, self.base_text_features, dim=-1)
        return (self.alpha_constraint * gap).mean()


class PooledViewsLoader:
    """Each epoch, every (view, image) feature pooled and shuffled by (seed, epoch); ``num_batches``
    batches of ``batch_size`` (the original's loop: its image loader's batch count, over 20x the data)."""

    def __init__(self, features, labels, batch_size, num_batches, seed, device):
        self._features = features  # callable -> [V, N, D], called on first use
        self._cache = None
        self.labels = labels.to(device)
        self.batch_size = batch_size
        self.num_batches = num_batches
        self.seed = seed
        self.epoch = 0
        self.device = device
        self.sampler = self  # the trainer's before_epoch calls sampler.set_epoch
        self.dataset = range(len(labels))

    def set_epoch(self, epoch):
        self.epoch = epoch

    def pooled(self):
        """All training views [V * N, D] and their labels [V * N]."""
        if self._cache is None:
            feats = self._features().to(self.device)
            self._cache = (feats.flatten(0, 1), self.labels.repeat(feats.shape[0]))
        return self._cache

    def __len__(self):
        return self.num_batches

    def __iter__(self):
        feats, labels = self.pooled()
        order = torch.randperm(feats.shape[0], generator=epoch_generator(self.seed, self.epoch)).to(self.device)
        for b in range(self.num_batches):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield {"feat": feats[idx], "label": labels[idx], "index": idx}


@TRAINER_REGISTRY.register()
class CLAP(FrozenCLIPTrainer):
    """CLass-Adaptive linear Probing (and ZS-LP with CONSTRAINT none); see the module docstring."""

    training_free = False
    protocol = Protocol(
        label="CLAP",
        config="SGD_lr1e-1_B256_ep300",  # the one published config, every dataset and shot count
        variants=(Variant("", opts=("TRAINER.CLAP.INIT", "ZS", "TRAINER.CLAP.CONSTRAINT", "l2"), folder="_ZSInit_l2"),
                  Variant("ZSLP", opts=("TRAINER.CLAP.INIT", "ZS", "TRAINER.CLAP.CONSTRAINT", "none"),
                          folder="_ZSInit_none", label="ZS-LP")),
        evaluations=("dg",),  # scripts/eval.sh: an ImageNet run evaluated on its variants
        # scripts/adapt.sh passes the backbone with --backbone (RN50 in the paper's tables); the yaml names none
        extra={"backbone_flag": True},
        source="jusiro/CLAP dbdf409: README.md, scripts/adapt.sh, configs/trainers/SGD_lr1e-1_B256_ep300.yaml",
    )

    def trainer_cfg(self):
        return self.cfg.TRAINER.CLAP

    def check_cfg(self, cfg):
        c = cfg.TRAINER.CLAP
        if c.INIT not in INITS:
            raise ConfigError(f"TRAINER.CLAP.INIT must be one of {', '.join(INITS)}, got {c.INIT!r} (the original's "
                              "TR, ClipA and TipA are the TaskRes, CLIP_Adapter and TipAdapter trainers here).")
        parse_constraint(c.CONSTRAINT)
        if c.AUG_VIEWS < 1:
            raise ConfigError(f"TRAINER.CLAP.AUG_VIEWS must be at least 1, got {c.AUG_VIEWS}.")
        super().check_cfg(cfg)

    def build_head(self, clip_model):
        c = self.cfg.TRAINER.CLAP
        classnames = self.dm.dataset.classnames
        logger.info("Building the zero-shot prototypes (%d classes)", len(classnames))
        base = build_base_text_features(clip_model, classnames, self.cfg.DATASET.NAME)
        self.distance, self.alpha_rule = parse_constraint(c.CONSTRAINT)
        logger.info("Prototypes initialised %s; constraint %s", "from zero-shot" if c.INIT == "ZS" else "at random",
                    c.CONSTRAINT)
        return ClassAdaptiveProbe(base, clip_model.logit_scale, c.INIT)

    def trainable_modules(self):
        return {"adapter": self.model}

    def swap_loaders(self):
        image_loader = self.train_loader_x
        super().swap_loaders()
        if image_loader is None or self.feature_source is None:
            return
        views = list(range(self.cfg.TRAINER.CLAP.AUG_VIEWS))
        labels = torch.tensor([d.label for d in self.dm.dataset.train_x], dtype=torch.long)
        self.train_loader_x = PooledViewsLoader(lambda: self.feature_source.features("train", views), labels,
                                                image_loader.batch_size, len(image_loader), self.cfg.SEED, self.device)

    def before_train(self):
        super().before_train()
        if self.distance != "none":  # alpha from zero-shot CLIP on every training view (not saved: recomputed)
            feats, labels = self.train_loader_x.pooled()
            with torch.no_grad():
                zero_shot = cosine_logits(feats.float(), self.model.base_text_features, self.model.logit_scale)
            alpha = class_adaptive_weights(zero_shot, labels, self.num_classes, self.alpha_rule)
            self.model.alpha_constraint.copy_(alpha.to(self.model.alpha_constraint.device))
            logger.info("Class-adaptive constraint weights: %s", [round(a, 3) for a in alpha.tolist()])

    def forward_backward(self, batch):
        inputs, label = self.parse_batch_train(batch)

        def loss_fn():
            output = self.model(self.image_features(inputs))
            loss = F.cross_entropy(output, label)
            if self.distance != "none":
                loss = loss + self.model.constraint(self.distance)
            return loss, output

        loss, output = self.step(loss_fn)
        return {"loss": loss.item(), "acc": compute_accuracy(output, label)[0].item()}
