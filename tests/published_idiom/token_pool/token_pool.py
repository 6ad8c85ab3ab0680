"""A prompt trainer in the idiom of PLOT's ``trainers/plot.py``, with only its Dassl imports renamed: its
folder ships its own ``clip/`` whose ResNet attention pool returns every token, and the trainer splits
them (``image_features[0]`` pooled, ``[1:]`` per position), matching the local tokens to the prompts.
With the project's ``clip`` it gets pooled features (N, D) and fails in forward.
Written for tests/test_published_idiom.py, not copied (PLOT's optimal-transport matching is replaced
by a mean over positions).
"""
import torch
import torch.nn as nn
from torch.nn import functional as F
from yacs.config import CfgNode as CN

from engine import TRAINER_REGISTRY, TrainerX
from engine.metrics import compute_accuracy
from engine.optim import build_optimizer, build_lr_scheduler

from clip import clip


def extend_cfg(cfg):
    cfg.TRAINER.TOKENPOOL = CN()
    cfg.TRAINER.TOKENPOOL.N_CTX = 4
    cfg.TRAINER.TOKENPOOL.PREC = "fp16"


def load_clip_to_cpu(cfg):
    url = clip._MODELS[cfg.MODEL.BACKBONE.NAME]
    model_path = clip._download(url)
    try:
        model = torch.jit.load(model_path, map_location="cpu").eval()
        state_dict = None
    except RuntimeError:
        state_dict = torch.load(model_path, map_location="cpu")
    return clip.build_model(state_dict or model.state_dict())


class TextEncoder(nn.Module):
    def __init__(self, clip_model):
        super().__init__()
        self.transformer = clip_model.transformer
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.dtype = clip_model.dtype

    def forward(self, prompts, tokenized_prompts):
        x = prompts + self.positional_embedding.type(self.dtype)
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = self.ln_final(x).type(self.dtype)
        return x[torch.arange(x.shape[0]), tokenized_prompts.argmax(dim=-1)] @ self.text_projection


class PromptLearner(nn.Module):
    def __init__(self, cfg, classnames, clip_model):
        super().__init__()
        dtype = clip_model.dtype
        n_ctx = cfg.TRAINER.TOKENPOOL.N_CTX
        ctx_vectors = torch.empty(n_ctx, clip_model.ln_final.weight.shape[0], dtype=dtype)
        nn.init.normal_(ctx_vectors, std=0.02)
        self.ctx = nn.Parameter(ctx_vectors)
        prompts = [" ".join(["X"] * n_ctx) + " " + name.replace("_", " ") + "." for name in classnames]
        tokenized = torch.cat([clip.tokenize(p) for p in prompts])
        with torch.no_grad():
            embedding = clip_model.token_embedding(tokenized).type(dtype)
        self.register_buffer("token_prefix", embedding[:, :1, :])
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx:, :])
        self.n_cls, self.tokenized_prompts = len(classnames), tokenized

    def forward(self):
        ctx = self.ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
        return torch.cat([self.token_prefix, ctx, self.token_suffix], dim=1)


class CustomCLIP(nn.Module):
    def __init__(self, cfg, classnames, clip_model):
        super().__init__()
        self.prompt_learner = PromptLearner(cfg, classnames, clip_model)
        self.tokenized_prompts = self.prompt_learner.tokenized_prompts
        self.image_encoder = clip_model.visual
        self.text_encoder = TextEncoder(clip_model)
        self.logit_scale = clip_model.logit_scale
        self.dtype = clip_model.dtype

    def forward(self, image):
        image_features = self.image_encoder(image.type(self.dtype))
        image_feature_pool = F.normalize(image_features[0], dim=-1)  # (N, D)
        local = F.normalize(image_features[1:], dim=-1)  # (M, N, D): one token per position
        text_features = F.normalize(self.text_encoder(self.prompt_learner(), self.tokenized_prompts), dim=-1)
        local_sim = torch.einsum("mbd,cd->bc", local, text_features) / local.shape[0]
        return self.logit_scale.exp() * 0.5 * (image_feature_pool @ text_features.t() + local_sim)


@TRAINER_REGISTRY.register()
class TokenPool(TrainerX):
    def check_cfg(self, cfg):
        assert cfg.TRAINER.TOKENPOOL.PREC in ["fp16", "fp32", "amp"]

    def build_model(self):
        cfg = self.cfg
        clip_model = load_clip_to_cpu(cfg)
        if cfg.TRAINER.TOKENPOOL.PREC in ("fp32", "amp"):
            clip_model.float()
        print("Building custom CLIP")
        self.model = CustomCLIP(cfg, self.dm.dataset.classnames, clip_model)
        for name, param in self.model.named_parameters():
            if "prompt_learner" not in name:
                param.requires_grad_(False)
        self.model.to(self.device)
        self.optim = build_optimizer(self.model.prompt_learner, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model("prompt_learner", self.model.prompt_learner, self.optim, self.sched)

    def forward_backward(self, batch):
        image, label = self.parse_batch_train(batch)
        output = self.model(image)
        loss = F.cross_entropy(output, label)
        self.model_backward_and_update(loss)
        loss_summary = {"loss": loss.item(), "acc": compute_accuracy(output, label)[0].item()}
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return loss_summary

    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)
