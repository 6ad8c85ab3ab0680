"""The copy's ``clip.model``: OpenAI's CLIP with a MaPLe-style ``build_model`` and PLOT's attention pool.

The subclasses add no weights, so they are set on the modules the project's builder made.
"""
import importlib

import torch
import torch.nn.functional as F

_project = importlib.import_module("clip.model")


class AttentionPool2d(_project.AttentionPool2d):
    """PLOT's pool: every token attends, so the output is ((H W) + 1, N, D): the pooled one first."""

    def forward(self, x):
        tokens = x.flatten(start_dim=2).permute(2, 0, 1)
        tokens = torch.cat([tokens.mean(dim=0, keepdim=True), tokens], dim=0)
        tokens = tokens + self.positional_embedding[:, None, :].to(tokens.dtype)
        out, _ = F.multi_head_attention_forward(
            query=tokens, key=tokens, value=tokens, embed_dim_to_check=tokens.shape[-1],
            num_heads=self.num_heads, in_proj_weight=None,
            in_proj_bias=torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
            out_proj_weight=self.c_proj.weight, out_proj_bias=self.c_proj.bias,
            training=self.training, need_weights=False, use_separate_proj_weight=True,
            q_proj_weight=self.q_proj.weight, k_proj_weight=self.k_proj.weight, v_proj_weight=self.v_proj.weight,
        )
        return out


class PromptedVisionTransformer(_project.VisionTransformer):
    """MaPLe's image tower: ``forward(x, visual_ctx)`` appends learnt prompt tokens after the patches."""

    def forward(self, x, visual_ctx=None):
        x = self.conv1(x).flatten(start_dim=2).permute(0, 2, 1)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        if visual_ctx is not None:
            x = torch.cat([x, visual_ctx.to(x.dtype).expand(x.shape[0], -1, -1)], dim=1)
        x = self.ln_pre(x)
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        return self.ln_post(x[:, 0, :]) @ self.proj


def build_model(state_dict, design_details=None):
    design_details = design_details or {}
    model = _project.build_model(state_dict)
    if isinstance(model.visual, _project.ModifiedResNet):
        model.visual.attnpool.__class__ = AttentionPool2d
    elif design_details.get("vision_ctx", 0) > 0:
        model.visual.__class__ = PromptedVisionTransformer
    model.design_details = design_details
    return model
