"""KgCoOp: Knowledge-guided Context Optimization (Yao et al., "Visual-Language Prompt Tuning with
Knowledge-guided Context Optimization", CVPR 2023; htyao89/KgCoOp).

CoOp's prompt learner and text encoder, plus a penalty that keeps the learnt class features near
the hand-crafted prompt's (the "general knowledge" of CLIP):

    w_k  = normalize(TextEncoder(prompt_k))              learnt prompt of class k
    t_k  = normalize(CLIP.encode_text(template(k)))      hand-crafted prompt, frozen
    loss = cross-entropy(logits, y) + W * (1 - mean_k cos(w_k, t_k))

Keys (``TRAINER.KGCOOP``; the original keeps them in ``TRAINER.COOP``): N_CTX, CSC, CTX_INIT
(a bool as in the original: True starts the context from "a photo of a"), W (the penalty's
weight; code default 1.0, the published scripts use 8.0 with N_CTX 4), PREC, CLASS_TOKEN_POSITION.
The hand-crafted template per dataset is the original's ``CUSTOM_TEMPLATES`` (DTD's differs from
CoOp's). Checkpoints: ``prompt_learner/`` with ``ctx``, ``token_prefix``, ``token_suffix``; the
original's learner also saves ``bias_vectors`` and ``meta_net.linear1.*``, which it never uses:
they are dropped when its checkpoints load here, and ours load there (it loads non-strict).

Deliberate differences from the original (each listed in README "Recent methods"):
- the hand-crafted features come from the same frozen CLIP in the trainer's precision (the original
  encodes them with a second CLIP kept in fp16 whatever PREC says, and its cosine then mixes fp32
  prompts with fp16 references; given those same fp16 references, ours matches it to 5e-7 of the
  context's movement, scripts/parity/text_methods.py);
- CLASS_TOKEN_POSITION middle/front place the class name as CoOp does (the original ignores the key);
- PREC amp trains with the penalty (the original's amp path drops it and fails on the tuple output).
"""
import logging

import torch.nn.functional as F
from yacs.config import CfgNode as CN

from engine import TRAINER_REGISTRY
from engine.errors import ConfigError
from engine.metrics import compute_accuracy
from engine.protocol import Protocol, Variant

from .templates import CUSTOM_TEMPLATES
from .coop import CoOp, CustomCLIP, PromptLearner, check_prompt_cfg
from .text_features import prompt_features

logger = logging.getLogger(__name__)

INIT_WORDS = "a photo of a"  # what CTX_INIT True starts from, in the original whatever the dataset
DEFAULT_TEMPLATE = "a photo of a {}."
# The original's CUSTOM_TEMPLATES (trainers/kgcoop.py): the hand-crafted prompt per dataset
TEMPLATES = {**CUSTOM_TEMPLATES, "DescribableTextures": "a photo of a {}, a type of texture."}
# Saved by the original's prompt learner but never used in its forward pass
ORIGINAL_UNUSED_KEYS = ("bias_vectors", "meta_net.linear1.weight", "meta_net.linear1.bias")


def extend_cfg(cfg):
    """TRAINER.KGCOOP with the original's keys and code defaults (its TRAINER.COOP group)."""
    cfg.TRAINER.KGCOOP = CN()
    cfg.TRAINER.KGCOOP.N_CTX = 16  # number of context vectors
    cfg.TRAINER.KGCOOP.CSC = False  # class-specific context
    cfg.TRAINER.KGCOOP.CTX_INIT = False  # True: start from "a photo of a" (its 4 tokens replace N_CTX)
    cfg.TRAINER.KGCOOP.W = 1.0  # weight of 1 - cos(learnt, hand-crafted)
    cfg.TRAINER.KGCOOP.PREC = "fp16"  # fp16, fp32, amp
    cfg.TRAINER.KGCOOP.CLASS_TOKEN_POSITION = "end"  # 'middle' or 'end' or 'front'


def hand_crafted_template(dataset_name, templates=TEMPLATES):
    """The method's hand-crafted prompt for a dataset ("a photo of a {}." where it publishes none)."""
    if dataset_name not in templates:
        logger.warning("No hand-crafted template published for %s; using %r", dataset_name, DEFAULT_TEMPLATE)
    return templates.get(dataset_name, DEFAULT_TEMPLATE)


def hand_crafted_features(clip_model, classnames, template):
    """Normalised text features [n_cls, D] of the template with each class name ("_" -> " ")."""
    text = prompt_features(clip_model, [c.replace("_", " ") for c in classnames], [template])[0]
    return text / text.norm(dim=-1, keepdim=True)


def knowledge_gap(text_features, hand_crafted):
    """1 - mean cosine between the learnt and the hand-crafted class features (KgCoOp's penalty)."""
    return 1.0 - F.cosine_similarity(text_features, hand_crafted.to(text_features.dtype), dim=1, eps=1e-7).mean()


class KgCoOpCLIP(CustomCLIP):
    """CoOp's CustomCLIP holding the hand-crafted class features (a buffer outside the checkpoint)."""

    def __init__(self, clip_model, prompt_learner, hand_crafted):
        super().__init__(clip_model, prompt_learner)
        self.register_buffer("hand_crafted_features", hand_crafted, persistent=False)


def kgcoop_config(dataset, shots, family):
    """The published config: one per backbone at every shot count and dataset."""
    configs = {"rn50": "rn50_ep100", "vit_b16": "vit_b16_ep100_ctxv1"}
    if family not in configs:
        raise ValueError(f"KgCoOp publishes configs for {', '.join(configs)}, not {family!r}")
    return configs[family]


@TRAINER_REGISTRY.register()
class KgCoOp(CoOp):
    """Knowledge-guided Context Optimization; see the module docstring."""

    ignored_keys = ORIGINAL_UNUSED_KEYS
    protocol = Protocol(
        label="KgCoOp",
        config=kgcoop_config,
        # scripts/base2new_train.sh and xd_train.sh: N_CTX 4, W 8.0, CSC False, class token at the end
        variants=(Variant("", opts=("TRAINER.KGCOOP.N_CTX", "4", "TRAINER.KGCOOP.CSC", "False",
                                    "TRAINER.KGCOOP.W", "8.0", "TRAINER.KGCOOP.CLASS_TOKEN_POSITION", "end"),
                          folder="_nctx4_w8.0"),),
        evaluations=("base2new", "dg"),
        extra={"base2new_shots": 16},  # base2new_train.sh trains the base classes with 16 shots
        source="htyao89/KgCoOp c43ccc3: configs/trainers/KgCoOp, scripts/base2new_train.sh, scripts/xd_train.sh",
    )

    def trainer_cfg(self):
        return self.cfg.TRAINER.KGCOOP

    def check_cfg(self, cfg):
        c = cfg.TRAINER.KGCOOP
        check_prompt_cfg("KGCOOP", c.N_CTX, "", c.PREC, c.CLASS_TOKEN_POSITION)
        super(CoOp, self).check_cfg(cfg)  # FrozenCLIPTrainer's: a backbone is given
        if not isinstance(c.CTX_INIT, bool):
            raise ConfigError(f"TRAINER.KGCOOP.CTX_INIT must be True (start from {INIT_WORDS!r}) or False "
                              f"(random), got {c.CTX_INIT!r}.")
        if c.W < 0:
            raise ConfigError(f"TRAINER.KGCOOP.W must be 0 or more (the weight of the knowledge penalty), got {c.W}.")

    def build_prompt_model(self, clip_model):
        c = self.cfg.TRAINER.KGCOOP
        classnames = self.dm.dataset.classnames
        learner = PromptLearner(classnames, clip_model, n_ctx=c.N_CTX, ctx_init=INIT_WORDS if c.CTX_INIT else "",
                                csc=c.CSC, class_token_position=c.CLASS_TOKEN_POSITION)
        template = hand_crafted_template(self.cfg.DATASET.NAME)
        logger.info("Hand-crafted prompt: %r", template)
        return KgCoOpCLIP(clip_model, learner, hand_crafted_features(clip_model, classnames, template))

    def forward_backward(self, batch):
        inputs, label = self.parse_batch_train(batch)
        weight = self.cfg.TRAINER.KGCOOP.W

        def loss_fn():
            text = self.model.text_features()
            output = self.model(inputs, text)
            loss = F.cross_entropy(output.float(), label) + weight * knowledge_gap(text, self.model.hand_crafted_features)
            return loss, output

        loss, output = self.step(loss_fn)
        return {"loss": loss.item(), "acc": compute_accuracy(output, label)[0].item()}
