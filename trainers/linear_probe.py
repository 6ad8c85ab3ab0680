"""Linear-probe CLIP (CoOp's ``lpclip``): logistic regression on frozen image features.

The probe is fitted on the raw image features of the few-shot train split, encoded with the
*test* transform (``lpclip/feat_extractor.py`` builds its loader with ``is_train=False``), its
C searched on the few-shot val split as ``lpclip/linear_probe.py`` does (see
``trainers/methods/linear_probe.py``), then evaluated on the test split. Features come from the
feature cache; the few-shot draw is the framework's (the same images every method sees), where
lpclip drew its own with numpy. The fitted classifier is saved as an ``nn.Linear``
(``linear_probe/model.pth.tar-1``: ``weight``, ``bias``, and the chosen ``C``) so
``--eval-only --model-dir`` evaluates it again.
"""
import logging

import numpy as np
import torch
import torch.nn as nn
from yacs.config import CfgNode as CN

from engine import TRAINER_REGISTRY
from engine.errors import ConfigError
from engine.protocol import Protocol, family_config

from .class_subset import select_classes
from .clip_trainer import PRECISIONS
from .fit_once import FitOnceTrainer
from .methods import linear_probe as lp
from .split_features import split_features

logger = logging.getLogger(__name__)


def extend_cfg(cfg):
    cfg.TRAINER.LINEAR_PROBE = CN()
    cfg.TRAINER.LINEAR_PROBE.PREC = "fp16"  # lpclip encodes with CLIP's fp16 weights on the GPU
    cfg.TRAINER.LINEAR_PROBE.NUM_STEP = lp.NUM_STEP  # binary-search steps after the coarse C list
    cfg.TRAINER.LINEAR_PROBE.MAX_ITER = lp.MAX_ITER  # lbfgs iterations per fit


class LinearHead(nn.Module):
    """logits = features @ weight^T + bias in float64 (scikit-learn's decision function)."""

    def __init__(self, dim, num_classes):
        super().__init__()
        self.register_buffer("weight", torch.zeros(num_classes, dim, dtype=torch.float64))
        self.register_buffer("bias", torch.zeros(num_classes, dtype=torch.float64))
        self.register_buffer("C", torch.tensor(0.0, dtype=torch.float64))

    def forward(self, features):
        return features.to(torch.float64) @ self.weight.t() + self.bias


@TRAINER_REGISTRY.register()
class LinearProbe(FitOnceTrainer):
    """fit (coarse C list, binary search on val) -> save ``linear_probe`` -> test (see FitOnceTrainer)."""

    protocol = Protocol(label="Linear probe", config=family_config, evaluations=("dg",), order=30,
                        source="CLIP's linear-probe protocol as CoOp runs it (one config per backbone)")

    def trainer_cfg(self):
        return self.cfg.TRAINER.LINEAR_PROBE

    def check_cfg(self, cfg):
        tcfg = cfg.TRAINER.LINEAR_PROBE
        if tcfg.PREC not in PRECISIONS:
            raise ConfigError(f"TRAINER.LINEAR_PROBE.PREC must be one of {', '.join(PRECISIONS)}, got {tcfg.PREC!r}.")
        if not isinstance(tcfg.NUM_STEP, int) or tcfg.NUM_STEP < 0:
            raise ConfigError(f"TRAINER.LINEAR_PROBE.NUM_STEP must be an integer >= 0 (lpclip uses 8), got {tcfg.NUM_STEP!r}.")
        if not isinstance(tcfg.MAX_ITER, int) or tcfg.MAX_ITER < 1:
            raise ConfigError(f"TRAINER.LINEAR_PROBE.MAX_ITER must be a positive integer (lpclip uses 1000), got {tcfg.MAX_ITER!r}.")

    def build_model(self):
        clip_model = self.load_clip()
        self.model = LinearHead(clip_model.embed_dim, self.num_classes).to(self.device)
        self.clip_model = clip_model
        self.register_model("linear_probe", self.model, None, None)
        self.use_feature_cache()

    def model_inference(self, inputs):
        feats = inputs if inputs.dim() == 2 else self.encode_images(inputs)
        return self.model(feats)

    def adapt_state_dict(self, name, state_dict):
        """An ImageNet probe evaluated on ImageNet-A/R keeps the rows of their classes."""
        return select_classes(self, state_dict, {"weight": 0, "bias": 0})

    def fit(self):
        """Fit the probe as lpclip does; returns the chosen C."""
        ds = self.dm.dataset
        if not ds.val:
            raise ConfigError(f"LinearProbe searches C on a val split, but {self.cfg.DATASET.NAME} has none; "
                              "train it on a dataset with a val split.")
        tcfg = self.trainer_cfg()
        x_train = split_features(self, ds.train_x, "train", is_train=False).double().cpu().numpy()
        y_train = np.array([d.label for d in ds.train_x])
        x_val = split_features(self, ds.val, "val", is_train=False).double().cpu().numpy()
        y_val = np.array([d.label for d in ds.val])
        shots = self.cfg.DATASET.NUM_SHOTS
        if shots > 0:  # lpclip's val_shot_list, min(K, 4): a no-op where the dataset already gives it
            keep = lp.fewshot_val_indices(y_val, lp.VAL_SHOTS.get(shots, min(shots, 4)), max(self.cfg.SEED, 0))
            x_val, y_val = x_val[keep], y_val[keep]
        logger.info("Linear probe: %d train and %d val features of dimension %d", len(y_train), len(y_val), x_train.shape[1])

        def score(c):
            acc = lp.accuracy(lp.fit_logistic(x_train, y_train, c, tcfg.MAX_ITER), x_val, y_val)
            logger.info("C %.6g: val accuracy %.2f%%", c, 100 * acc)
            return acc

        c, _ = lp.search_c(score, num_step=tcfg.NUM_STEP)
        weight, bias = lp.linear_weights(lp.fit_logistic(x_train, y_train, c, tcfg.MAX_ITER), self.num_classes)
        with torch.no_grad():
            self.model.weight.copy_(torch.from_numpy(weight))
            self.model.bias.copy_(torch.from_numpy(bias))
            self.model.C.fill_(c)
        logger.info("Linear probe: C = %.6g", c)
        return c
