"""Tip-Adapter (Zhang et al., ECCV 2022): a key-value cache of the few-shot training set.

    keys   = normalize(mean over `augment_epoch` augmented views of the train features)   [NK, D]
    values = one_hot(train labels)                                                        [NK, C]
    logits = 100 * f @ W^T + alpha * exp(-beta * (1 - f @ keys^T)) @ values               f: unit test feature

As gaopengcuhk/Tip-Adapter (``main.py``, ``utils.py``): W is the prompt-ensembled zero-shot
classifier, the training-free variant searches (beta, alpha) on the val features over the grid
``[i * (scale - 0.1) / step + 0.1 for i in range(step)]`` (beta outer, alpha inner, first strict
improvement kept), and Tip-Adapter-F makes the keys a parameter (an ``nn.Linear`` weight),
trains them with AdamW (eps 1e-4) under per-iteration cosine annealing at the initial alpha and
beta, then searches again with the trained keys. The zero-shot logits are scaled by 100 as in the
original (``ZERO_SHOT_SCALE``), not by the model's ``logit_scale.exp()``: the two agree on OpenAI's
CLIPs (100 after clamping), and elsewhere the scale sets how much the cache counts against the
zero-shot logits for a given alpha, so the original's searched and initial alphas mean the same here.
"""
import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

logger = logging.getLogger(__name__)

ZERO_SHOT_SCALE = 100.0  # the original's ``100. * features @ clip_weights``


def build_cache(view_features, labels, num_classes):
    """(keys [NK, D] unit-norm, values [NK, C] one-hot) from raw features [V, NK, D] of V views."""
    keys = view_features.float().mean(dim=0)
    keys = keys / keys.norm(dim=-1, keepdim=True)
    values = F.one_hot(torch.as_tensor(labels, dtype=torch.long), num_classes).float()
    return keys, values


def cache_logits(features, keys, values, beta):
    """exp(-beta * (1 - affinity)) @ values, affinity = features @ keys^T (both unit-norm)."""
    affinity = features @ keys.t()
    return (-1 * (beta - beta * affinity)).exp() @ values


def tip_logits(features, keys, values, classifier, alpha, beta, logit_scale):
    """Zero-shot logits plus alpha times the cache logits; ``features`` unit-norm [B, D]."""
    clip_logits = logit_scale * features @ classifier.t()
    return clip_logits + cache_logits(features, keys, values, beta) * alpha


def search_grid(scale, step):
    """The original's candidate list for one hyper-parameter: step values from 0.1 towards scale."""
    return [i * (scale - 0.1) / step + 0.1 for i in range(step)]


def accuracy(logits, labels):
    """Top-1 accuracy in percent, as the original's ``cls_acc``."""
    return 100.0 * (logits.argmax(dim=1) == labels).float().sum().item() / labels.shape[0]


@torch.no_grad()
def search_hp(features, labels, keys, values, classifier, logit_scale, search_scale, search_step):
    """(best_beta, best_alpha, best_acc) on the val features; (0, 0, 0) when nothing beats 0 %."""
    best_acc, best_beta, best_alpha = 0.0, 0.0, 0.0
    clip_logits = logit_scale * features @ classifier.t()
    affinity = features @ keys.t()
    for beta in search_grid(search_scale[0], search_step[0]):
        cache = (-1 * (beta - beta * affinity)).exp() @ values
        for alpha in search_grid(search_scale[1], search_step[1]):
            acc = accuracy(clip_logits + cache * alpha, labels)
            if acc > best_acc:
                logger.info("New best setting, beta: %.2f, alpha: %.2f; accuracy: %.2f", beta, alpha, acc)
                best_acc, best_beta, best_alpha = acc, beta, alpha
    return best_beta, best_alpha, best_acc


class TipAdapterHead(nn.Module):
    """The cache model on top of frozen CLIP: logits for raw image features [B, D].

    ``cache_keys`` is a parameter when ``learnable_keys`` (Tip-Adapter-F) and a buffer
    otherwise; alpha and beta are buffers so the searched values travel in the checkpoint.
    """

    def __init__(self, classifier, num_keys, num_classes, alpha, beta, logit_scale, learnable_keys=False):
        super().__init__()
        dim = classifier.shape[1]
        self.register_buffer("classifier", classifier)
        self.register_buffer("cache_values", torch.zeros(num_keys, num_classes, dtype=classifier.dtype))
        keys = torch.zeros(num_keys, dim, dtype=classifier.dtype)
        if learnable_keys:
            self.cache_keys = nn.Parameter(keys)
        else:
            self.register_buffer("cache_keys", keys)
        self.register_buffer("alpha", torch.tensor(float(alpha)))
        self.register_buffer("beta", torch.tensor(float(beta)))
        self.register_buffer("logit_scale", torch.as_tensor(float(logit_scale)))

    def resize_cache(self, num_keys):
        """Zero keys and values for ``num_keys`` entries (before loading a cache of another size)."""
        keys = torch.zeros(num_keys, self.cache_keys.shape[1], dtype=self.cache_keys.dtype, device=self.cache_keys.device)
        if isinstance(self.cache_keys, nn.Parameter):
            self.cache_keys = nn.Parameter(keys)
        else:
            self.cache_keys = keys
        self.cache_values = self.cache_values.new_zeros(num_keys, self.cache_values.shape[1])

    @torch.no_grad()
    def set_cache(self, keys, values):
        self.cache_keys.copy_(keys.to(self.cache_keys.dtype))
        self.cache_values.copy_(values.to(self.cache_values.dtype))

    @torch.no_grad()
    def set_hp(self, alpha, beta):
        self.alpha.fill_(float(alpha))
        self.beta.fill_(float(beta))

    def forward(self, image_features):
        feats = image_features.to(self.classifier.dtype)
        feats = feats / feats.norm(dim=-1, keepdim=True)
        return tip_logits(feats, self.cache_keys, self.cache_values, self.classifier,
                          self.alpha, self.beta, self.logit_scale)
