"""ProGrad: Prompt-aligned Gradient (Zhu et al., "Prompt-aligned Gradient for Prompt Tuning",
ICCV 2023; BeierZhu/Prompt-align).

CoOp's prompt learner and text encoder; each step updates the context only along directions
that do not conflict with zero-shot CLIP's "general knowledge":

    g_ce = d cross-entropy(logits, y) / d ctx
    g_kl = d [T^2 * sum_k -softmax(zs / T)_k * log_softmax(logits / T)_k] / d ctx
                                           zs: zero-shot CLIP's logits with the hand-crafted prompt
    g    = g_ce - LAMBDA * (g_ce . u) u    if g_ce . g_kl < 0, with u = g_kl / |g_kl|
         = g_ce                            otherwise                         (per parameter)

and the optimiser steps with ``g``. Keys (``TRAINER.PROGRAD``; the original keeps the prompt keys
in ``TRAINER.COOP`` and LAMBDA / T in ``LOSS``): N_CTX, CSC, CTX_INIT (a bool as in the original:
True writes the dataset's template words, e.g. "a centered satellite photo of", into the last
context vectors and zeros before them), PREC, CLASS_TOKEN_POSITION, LAMBDA (1.0; the README uses
0.8 for 8 and 16 shots on Flowers102, DTD, EuroSAT), T (1.0). The template per dataset is the
original's ``CUSTOM_TEMPLATES`` (its own, not CoOp's). Checkpoints: ``prompt_learner/`` with
``ctx``, ``token_prefix``, ``token_suffix``, as the original's. The log reports ``xe_loss``,
``kl_loss`` and ``acc`` as the original does.

Deliberate differences (README "Recent methods"): the zero-shot teacher reads the same cached image
features as the prompt (the original encodes each batch again with a second, fp32 CLIP: the same
numbers under fp32, fp16 rounding apart under fp16); PREC amp projects the scaled gradients (the
projection is scale-free) where the original's amp path fails.
"""
import logging

import torch
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from engine import TRAINER_REGISTRY
from engine.dassl_forks import project_gradient  # the fork's rule, shared with prograd_backward_and_update
from engine.errors import ConfigError
from engine.metrics import compute_accuracy
from engine.protocol import Protocol, Variant

from .clip_trainer import CosineClassifier
from .coop import CoOp, CustomCLIP, PromptLearner, check_prompt_cfg
from .kgcoop import hand_crafted_features, hand_crafted_template
from engine.protocol import coop_epochs

logger = logging.getLogger(__name__)

# The original's CUSTOM_TEMPLATES (trainers/prograd.py): the zero-shot teacher's prompt, and the
# initial context when CTX_INIT is True (the words before " {}.")
TEMPLATES = {
    "OxfordPets": "a type of pet, a photo of a {}.",
    "OxfordFlowers": "a type of flower, a photo of a {}.",
    "FGVCAircraft": "a type of aircraft, a photo of a {}.",
    "DescribableTextures": "a texture of {}.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": "a photo of a {}.",
    "Food101": "a type of food, a photo of {}.",
    "SUN397": "a photo of a {}.",
    "Caltech101": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
    "ImageNetSketch": "a photo of a {}.",
    "ImageNetV2": "a photo of a {}.",
    "ImageNetA": "a photo of a {}.",
    "ImageNetR": "a photo of a {}.",
}
# README: "the 8-shots and 16-shots results on Flowers102, DTD, and EuroSAT are gotten with lambda as 0.8"
LAMBDA_08 = {"datasets": ("oxford_flowers", "dtd", "eurosat"), "shots": (8, 16)}


def extend_cfg(cfg):
    """TRAINER.PROGRAD with the original's keys and code defaults (its TRAINER.COOP and LOSS groups)."""
    cfg.TRAINER.PROGRAD = CN()
    cfg.TRAINER.PROGRAD.N_CTX = 16  # number of context vectors
    cfg.TRAINER.PROGRAD.CSC = False  # class-specific context
    cfg.TRAINER.PROGRAD.CTX_INIT = False  # True: the dataset template's words fill the last context vectors
    cfg.TRAINER.PROGRAD.PREC = "fp16"  # fp16, fp32, amp
    cfg.TRAINER.PROGRAD.CLASS_TOKEN_POSITION = "end"  # 'middle' or 'end' or 'front'
    cfg.TRAINER.PROGRAD.LAMBDA = 1.0  # LOSS.LAMBDA: how much of the conflicting component is removed
    cfg.TRAINER.PROGRAD.T = 1.0  # LOSS.T: distillation temperature


def distillation_loss(logits, teacher_logits, temperature):
    """T^2 * mean over the batch of the cross-entropy from softmax(teacher / T) to logits / T
    (the original's kl_loss: the KL divergence up to a constant, so the same gradient)."""
    target = F.softmax(teacher_logits.float() / temperature, dim=-1)
    log_prob = F.log_softmax(logits.float() / temperature, dim=-1)
    return (-target * log_prob * temperature * temperature).sum(dim=1).mean()


class ProGradPromptLearner(PromptLearner):
    """CoOp's learner with ProGrad's CTX_INIT: N_CTX vectors, the template's words in the last ones."""

    def __init__(self, classnames, clip_model, init_words="", **kwargs):
        self.init_words = init_words
        super().__init__(classnames, clip_model, **kwargs)

    def initial_context(self, clip_model, n_cls, n_ctx, ctx_init, csc, dtype):
        if not self.init_words:
            return super().initial_context(clip_model, n_cls, n_ctx, "", csc, dtype)
        words = self.init_words
        n_words = len(words.split(" "))
        if n_ctx < n_words:
            raise ConfigError(f"TRAINER.PROGRAD.N_CTX is {n_ctx} but CTX_INIT's words {words!r} need at least "
                              f"{n_words}; raise N_CTX or set CTX_INIT False.")
        ctx, _, _ = super().initial_context(clip_model, n_cls, n_ctx, words, False, dtype)
        vectors = torch.zeros(n_ctx, ctx.shape[-1], dtype=dtype)
        # the original counts words, not tokens: a template with a comma keeps its first n_words
        # tokens here, and the prompt text below carries the rest after the context (as there)
        vectors[n_ctx - n_words:] = ctx[:n_words]
        return vectors, f"{' '.join(['X'] * (n_ctx - n_words))} {words}", n_ctx


def prograd_config(dataset, shots, family):
    """CoOp's per-shot schedule (the README's commands): 1 shot rn50_ep50, 2-4 rn50_ep100, 8-16
    rn50; ImageNet 50 epochs; LAMBDA 0.8 at 8/16 shots on Flowers102, DTD, EuroSAT (rn50_lambda0.8)."""
    if family != "rn50":
        raise ValueError(f"ProGrad publishes RN50 configs only, not {family!r}")
    epochs = coop_epochs(dataset, shots)
    if dataset in LAMBDA_08["datasets"] and shots in LAMBDA_08["shots"]:
        return "rn50_lambda0.8"
    return {50: "rn50_ep50", 100: "rn50_ep100", 200: "rn50"}[epochs]


@TRAINER_REGISTRY.register()
class ProGrad(CoOp):
    """Prompt-aligned Gradient; see the module docstring."""

    protocol = Protocol(
        label="ProGrad",
        config=prograd_config,
        # scripts/prograd.sh as the README calls it: N_CTX 16, CSC False, class token at the end
        variants=(Variant("", opts=("TRAINER.PROGRAD.N_CTX", "16", "TRAINER.PROGRAD.CSC", "False",
                                    "TRAINER.PROGRAD.CLASS_TOKEN_POSITION", "end"),
                          folder="_nctx16_cscFalse_ctpend"),),
        evaluations=("base2new", "dg"),
        # scripts/base2new_train_prograd.sh: rn50_ep100, 4 shots; eval.sh (robustness): 4 shots on ImageNet
        extra={"base2new_config": "rn50_ep100", "base2new_shots": 4, "dg_shots": 4},
        source="BeierZhu/Prompt-align 1b76203: ProGrad.public/README.md, configs/trainers/ProGrad, scripts/",
    )

    def trainer_cfg(self):
        return self.cfg.TRAINER.PROGRAD

    def check_cfg(self, cfg):
        c = cfg.TRAINER.PROGRAD
        check_prompt_cfg("PROGRAD", c.N_CTX, "", c.PREC, c.CLASS_TOKEN_POSITION)
        super(CoOp, self).check_cfg(cfg)  # FrozenCLIPTrainer's: a backbone is given
        if not isinstance(c.CTX_INIT, bool):
            raise ConfigError(f"TRAINER.PROGRAD.CTX_INIT must be True (start from the dataset's template) or False "
                              f"(random), got {c.CTX_INIT!r}.")
        if c.T <= 0:
            raise ConfigError(f"TRAINER.PROGRAD.T must be above 0 (a temperature), got {c.T}.")

    def build_prompt_model(self, clip_model):
        c = self.cfg.TRAINER.PROGRAD
        classnames = self.dm.dataset.classnames
        template = hand_crafted_template(self.cfg.DATASET.NAME, TEMPLATES)
        init_words = template.replace(" {}.", "").replace("_", " ") if c.CTX_INIT else ""
        learner = ProGradPromptLearner(classnames, clip_model, init_words=init_words, n_ctx=c.N_CTX,
                                       csc=c.CSC, class_token_position=c.CLASS_TOKEN_POSITION)
        logger.info("Zero-shot teacher prompt: %r", template)
        model = CustomCLIP(clip_model, learner)
        # zero-shot CLIP on the same image features (not in the checkpoint: built from CLIP each run)
        model.zero_shot = CosineClassifier(hand_crafted_features(clip_model, classnames, template),
                                           clip_model.logit_scale)
        return model

    def forward_backward(self, batch):
        inputs, label = self.parse_batch_train(batch)
        c = self.cfg.TRAINER.PROGRAD
        with torch.autocast(self.device.type, enabled=self.prec == "amp"):
            with torch.no_grad():
                features = self.image_features(inputs)  # cached features pass through; images encode once
                teacher = self.model.zero_shot(features)
            output = self.model(features)
            xe_loss = F.cross_entropy(output.float(), label)
            kl_loss = distillation_loss(output, teacher, c.T)
        self.prograd_step(xe_loss, kl_loss, c.LAMBDA)
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {"xe_loss": xe_loss.item(), "kl_loss": kl_loss.item(),
                "acc": compute_accuracy(output, label)[0].item()}

    def prograd_step(self, xe_loss, kl_loss, lambda_):
        """The two backward passes, the projection per parameter, one optimiser step."""
        scale = self.scaler.scale if self.scaler is not None else (lambda loss: loss)
        params = [p for p in self.model.prompt_learner.parameters() if p.requires_grad]
        self.optim.zero_grad()
        self.detect_anomaly(kl_loss)
        scale(kl_loss).backward(retain_graph=True)
        kl_grads = [p.grad.clone() for p in params]
        self.optim.zero_grad()
        self.detect_anomaly(xe_loss)
        scale(xe_loss).backward()
        for p, kl_grad in zip(params, kl_grads):
            p.grad = project_gradient(p.grad, kl_grad, lambda_)
        if self.scaler is not None:
            self.scaler.step(self.optim)
            self.scaler.update()
        else:
            self.optim.step()
