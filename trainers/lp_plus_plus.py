"""LP++: a linear probe blended with the text classifier (Huang, Shakeri et al., "LP++: A Surprisingly
Strong Linear Probe for Few-Shot CLIP", CVPR 2024; FereshteShakeri/FewShot-CLIP-Strong-Baseline,
``methods/linear_probe_p2.py``).

On L2-normalised image features f and the unit-norm text classifier T [D, K] (Tip-Adapter's
templates, prompt-ensembled):

    logits = W f + b + alpha * (T^T f)              W [K, D], b [K], alpha [K] (class-wise blend)

trained full-batch for OPTIM.MAX_EPOCH (300) epochs with step sizes that need no search:

    W  starts at the per-class SUM of the training features, b at nn.Linear's default;
       SGD, momentum 0.9, lr_w = 4 N / lambda_max(F^T F)
    alpha starts at ALPHA_INIT_SCALE (250) x mean_k (mean over class k's samples of f . t_k);
       every ALPHA_EVERY (10) epochs alpha -= lr_alpha * g, lr_alpha = N / (4 max_k sum_i (f_i . t_k)^2),
       g = the sum of alpha's gradients since the start (the original never zeroes alpha.grad)

and the state after the epoch with the best accuracy on the few-shot val split (ties: the later
epoch) is kept, as the original reports the test accuracy of that epoch. Training features are one
augmented view per image (random resized crop, scale (0.5, 1), and flip: INPUT.RRCROP_SCALE in
configs/trainers/LPPlusPlus/); val and test use the test transform.

Checkpoint: ``lp_plus_plus/model.pth.tar-1`` (``weight``, ``bias``, ``alpha``, ``text_weights``,
``best_epoch``); the original saves none. Deliberate differences (README "Recent methods"): the
few-shot draw and its val split are the framework's (CoOp's min(K, 4) val images per class, where
the original draws K from val with its own sampler, and runs 10 draws in one process); b starts
from nn.Linear's initialisation under a generator seeded by SEED (the original uses the global
stream); lambda_max comes from torch.linalg.eigvalsh in float64 (the original: scipy in the
features' dtype).
"""
import logging

import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from engine import TRAINER_REGISTRY
from engine.errors import ConfigError
from engine.protocol import Protocol

from .class_subset import select_classes
from .clip_trainer import PRECISIONS
from .fit_once import FitOnceTrainer
from .methods.prompt_ensemble import ensemble_classifier
from .split_features import split_features
from .text_features import prompt_features
from .tip_adapter import tip_templates

logger = logging.getLogger(__name__)


def extend_cfg(cfg):
    """TRAINER.LP_PLUS_PLUS: the values methods/linear_probe_p2.py hard-codes (train_epoch is OPTIM.MAX_EPOCH)."""
    cfg.TRAINER.LP_PLUS_PLUS = CN()
    cfg.TRAINER.LP_PLUS_PLUS.ALPHA_INIT_SCALE = 250.0  # alpha_init = 250 x mean text affinity of the true class
    cfg.TRAINER.LP_PLUS_PLUS.ALPHA_EVERY = 10  # epochs between alpha's gradient steps
    cfg.TRAINER.LP_PLUS_PLUS.MOMENTUM = 0.9  # SGD momentum of W and b
    cfg.TRAINER.LP_PLUS_PLUS.PREC = "fp16"  # the image encoder's; the probe runs in fp32


def class_sums(features, labels, num_classes):
    """[K, D]: the sum of each class's features (the original's "centroids", undivided)."""
    return F.one_hot(labels, num_classes).to(features.dtype).t() @ features


def lr_w(features):
    """4 N / largest eigenvalue of F^T F: the step size of W (1 / its loss's smoothness bound)."""
    gram = (features.t() @ features).double()
    return (4 * features.shape[0] / torch.linalg.eigvalsh(gram).max()).item()


def lr_alpha(features, text_weights):
    """N / (4 max_k sum_i (f_i . t_k)^2): the step size of alpha."""
    return (features.shape[0] / (4 * (features @ text_weights).pow(2).sum(dim=0).max())).item()


def init_alpha(features, labels, text_weights, num_classes, scale=250.0):
    """scale x mean over classes k of (mean over class k's samples of f . t_k)."""
    affinity = (features @ text_weights).double()
    one_hot = F.one_hot(labels, num_classes).double()
    per_class = (one_hot * affinity).sum(dim=0) / one_hot.sum(dim=0)
    return (scale * per_class).mean().item()


class LPPlusPlusHead(nn.Module):
    """logits = W f + b + alpha * (f @ T); f is normalised here (the original normalises on extraction)."""

    def __init__(self, text_weights, num_classes):
        super().__init__()
        dim = text_weights.shape[0]
        self.register_buffer("text_weights", text_weights.float())  # [D, K]
        self.register_buffer("weight", torch.zeros(num_classes, dim))
        self.register_buffer("bias", torch.zeros(num_classes))
        self.register_buffer("alpha", torch.zeros(num_classes))
        self.register_buffer("best_epoch", torch.tensor(-1))

    def forward(self, image_features):
        f = image_features.float()
        f = f / f.norm(dim=-1, keepdim=True)
        return logits(f, self.weight, self.bias, self.alpha, self.text_weights)


def logits(features, weight, bias, alpha, text_weights):
    return features @ weight.t() + bias + alpha * (features @ text_weights)


def fit_lp_plus_plus(train_f, train_y, val_f, val_y, text_weights, num_classes, epochs, init_bias,
                     alpha_scale=250.0, alpha_every=10, momentum=0.9):
    """LP++'s training loop on normalised features. Returns {"best": (W, b, alpha), "best_epoch",
    "final": (W, b, alpha), "lr_w", "lr_alpha", "alpha_init", "val_acc": per epoch}."""
    weight = class_sums(train_f, train_y, num_classes).clone().requires_grad_(True)
    bias = init_bias.clone().to(train_f.dtype).requires_grad_(True)
    step_w, step_alpha = lr_w(train_f), lr_alpha(train_f, text_weights)
    alpha0 = init_alpha(train_f, train_y, text_weights, num_classes, alpha_scale)
    alpha = torch.full((num_classes,), alpha0, dtype=train_f.dtype, requires_grad=True)
    alpha_grad = torch.zeros_like(alpha)  # alpha's gradients summed since the start (see the docstring)
    optimizer = torch.optim.SGD([weight, bias], lr=step_w, momentum=momentum)
    logger.info("LP++: lr_w %.6g, lr_alpha %.6g, initial alpha %.6g", step_w, step_alpha, alpha0)
    best_acc, best, best_epoch, val_accs = -1.0, None, -1, []
    for epoch in range(epochs):
        loss = F.cross_entropy(logits(train_f, weight, bias, alpha, text_weights), train_y)
        optimizer.zero_grad()
        alpha.grad = None
        loss.backward()
        optimizer.step()
        alpha_grad += alpha.grad
        if (epoch + 1) % alpha_every == 0:
            with torch.no_grad():
                alpha -= step_alpha * alpha_grad
        with torch.no_grad():
            acc = (logits(val_f, weight, bias, alpha, text_weights).argmax(dim=1) == val_y).float().mean().item() * 100
        val_accs.append(acc)
        if acc >= best_acc:
            best_acc, best_epoch = acc, epoch
            best = tuple(t.detach().clone() for t in (weight, bias, alpha))
    return {"best": best, "best_epoch": best_epoch, "final": tuple(t.detach().clone() for t in (weight, bias, alpha)),
            "lr_w": step_w, "lr_alpha": step_alpha, "alpha_init": alpha0, "val_acc": val_accs}


@TRAINER_REGISTRY.register()
class LPPlusPlus(FitOnceTrainer):
    """LP++: fit (full batch, OPTIM.MAX_EPOCH epochs) -> keep the best-val epoch -> test."""

    protocol = Protocol(
        label="LP++",
        config="rn50",  # main.py with configs/base.yaml: one setting for every dataset and shot count
        source="FereshteShakeri/FewShot-CLIP-Strong-Baseline f81054f: configs/base.yaml, main.py, "
               "methods/linear_probe_p2.py",
    )

    def trainer_cfg(self):
        return self.cfg.TRAINER.LP_PLUS_PLUS

    def check_cfg(self, cfg):
        c = cfg.TRAINER.LP_PLUS_PLUS
        if c.PREC not in PRECISIONS:
            raise ConfigError(f"TRAINER.LP_PLUS_PLUS.PREC must be one of {', '.join(PRECISIONS)}, got {c.PREC!r}.")
        if not isinstance(c.ALPHA_EVERY, int) or c.ALPHA_EVERY < 1:
            raise ConfigError(f"TRAINER.LP_PLUS_PLUS.ALPHA_EVERY must be a whole number of epochs >= 1, got {c.ALPHA_EVERY!r}.")
        if cfg.OPTIM.MAX_EPOCH < 1:
            raise ConfigError(f"OPTIM.MAX_EPOCH is LP++'s train_epoch and must be at least 1, got {cfg.OPTIM.MAX_EPOCH}.")

    def build_model(self):
        clip_model = self.load_clip()
        templates = tip_templates(self.cfg.DATASET.NAME)
        classnames = [c.replace("_", " ") for c in self.dm.dataset.classnames]
        with torch.no_grad():
            text = ensemble_classifier(prompt_features(clip_model, classnames, templates)).float()
        self.model = LPPlusPlusHead(text.t().contiguous(), self.num_classes).to(self.device)
        self.register_model("lp_plus_plus", self.model, None, None)
        self.use_feature_cache()

    def model_inference(self, inputs):
        return self.model(inputs if inputs.dim() == 2 else self.encode_images(inputs))

    def adapt_state_dict(self, name, state_dict):
        """An ImageNet fit evaluated on ImageNet-A/R keeps the rows (and text columns) of their classes."""
        return select_classes(self, state_dict, {"weight": 0, "bias": 0, "alpha": 0, "text_weights": 1})

    def fit(self):
        ds, c = self.dm.dataset, self.trainer_cfg()
        if not ds.val:
            raise ConfigError(f"LP++ keeps the epoch with the best val accuracy, but {self.cfg.DATASET.NAME} has no "
                              "val split; use a dataset with one.")
        normalise = lambda f: (f / f.norm(dim=-1, keepdim=True)).float()  # noqa: E731
        train_f = normalise(split_features(self, ds.train_x, "train", is_train=True, views=[0])[0])
        val_f = normalise(split_features(self, ds.val, "val", is_train=False))
        device = train_f.device
        train_y = torch.tensor([d.label for d in ds.train_x], device=device)
        val_y = torch.tensor([d.label for d in ds.val], device=device)
        generator = torch.Generator().manual_seed(max(self.cfg.SEED, 0))
        bound = 1 / train_f.shape[1] ** 0.5  # nn.Linear's default bias initialisation
        init_bias = (torch.rand(self.num_classes, generator=generator) * 2 - 1) * bound
        logger.info("LP++: %d train and %d val features, %d epochs", len(train_y), len(val_y), self.cfg.OPTIM.MAX_EPOCH)
        result = fit_lp_plus_plus(train_f, train_y, val_f, val_y, self.model.text_weights.to(device), self.num_classes,
                                  self.cfg.OPTIM.MAX_EPOCH, init_bias.to(device), c.ALPHA_INIT_SCALE, c.ALPHA_EVERY,
                                  c.MOMENTUM)
        weight, bias, alpha = result["best"]
        with torch.no_grad():
            self.model.weight.copy_(weight)
            self.model.bias.copy_(bias)
            self.model.alpha.copy_(alpha)
            self.model.best_epoch.fill_(result["best_epoch"] + 1)
        logger.info("LP++: best val accuracy %.2f%% at epoch %d", max(result["val_acc"]), result["best_epoch"] + 1)
        return result
