"""CLIP-Adapter (Gao et al., 2021): a bottleneck MLP on the image features, blended residually.

    x' = ratio * Adapter(x) + (1 - ratio) * x,   Adapter = Linear(D, D/r) ReLU Linear(D/r, D) ReLU
    logits = exp(logit_scale) * normalize(x') @ normalize(t)^T    t: the dataset template's text features

As ``clip_adapter.py`` of gaopengcuhk/CLIP-Adapter: both linear layers without bias, a ReLU after
each (the output one included), reduction 4, ratio 0.2; the state-dict keys are ``fc.0.weight``
and ``fc.2.weight`` (its ``Adapter.fc`` Sequential). The original fixes D = 1024 (RN50); here D
is the backbone's embedding size.
"""
import torch.nn as nn


class Adapter(nn.Module):
    """Linear(c_in, c_in // reduction) -> ReLU -> Linear(c_in // reduction, c_in) -> ReLU, no biases."""

    def __init__(self, c_in, reduction=4):
        super().__init__()
        hidden = c_in // reduction
        if hidden < 1:
            raise ValueError(f"reduction {reduction} leaves no hidden unit for {c_in}-d features")
        self.fc = nn.Sequential(
            nn.Linear(c_in, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, c_in, bias=False),
            nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.fc(x)


def blend(image_features, adapted, ratio):
    """The residual blend ratio * adapted + (1 - ratio) * original."""
    return ratio * adapted + (1 - ratio) * image_features


def adapter_logits(image_features, adapter, text_features, ratio, logit_scale):
    """CLIP-Adapter's logits from raw image features [B, D] and raw text features [K, D]."""
    feats = blend(image_features, adapter(image_features), ratio)
    feats = feats / feats.norm(dim=-1, keepdim=True)
    text = text_features / text_features.norm(dim=-1, keepdim=True)
    return logit_scale * feats @ text.t()


