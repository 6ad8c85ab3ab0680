"""Zero-shot CLIP (CoOp's ``ZeroshotCLIP``): classify with normalised prompt embeddings, no training.

One template per dataset (CoOp's CUSTOM_TEMPLATES) with ``_`` in class names read as spaces.
Run with ``--eval-only``; test features come from the feature cache like every frozen-CLIP trainer.
"""
import logging

from yacs.config import CfgNode as CN

from engine import TRAINER_REGISTRY

from .clip_trainer import FrozenCLIPTrainer
from .templates import CUSTOM_TEMPLATES, DEFAULT_TEMPLATE
from .text_features import prompt_features

logger = logging.getLogger(__name__)


def extend_cfg(cfg):
    cfg.TRAINER.ZeroshotCLIP = CN()
    cfg.TRAINER.ZeroshotCLIP.PREC = "fp16"


@TRAINER_REGISTRY.register()
class ZeroshotCLIP(FrozenCLIPTrainer):
    training_free = True  # --eval-only runs without --model-dir

    def build_model(self):
        clip_model = self.load_clip()
        template = CUSTOM_TEMPLATES.get(self.cfg.DATASET.NAME, DEFAULT_TEMPLATE)
        classnames = [c.replace("_", " ") for c in self.dm.dataset.classnames]
        logger.info("Prompt template: %s", template)
        text = prompt_features(clip_model, classnames, [template])[0]
        self.text_features = text / text.norm(dim=-1, keepdim=True)
        self.model = clip_model
        self.use_feature_cache()

    def model_inference(self, inputs):
        feats = inputs if inputs.dim() == 2 else self.encode_images(inputs)
        feats = feats / feats.norm(dim=-1, keepdim=True)
        return self.clip_model.logit_scale.exp() * feats.to(self.text_features.dtype) @ self.text_features.t()

    def train(self):
        logger.info("ZeroshotCLIP has nothing to train: evaluating")
        self.test()

    def set_model_mode(self, mode="train", names=None):
        self.clip_model.eval()

