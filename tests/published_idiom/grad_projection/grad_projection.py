"""A prompt trainer in the idiom of ProGrad's ``trainers/prograd.py`` (and KgCoOp's), with only its Dassl
imports renamed: it steps with ``self.prograd_backward_and_update(xe_loss, kl_loss, lambda_)``, a
method of ProGrad's Dassl fork, and its config lines (KgCoOp's and ProGrad's ``train.py``) give
``TRAINER.COOP.CTX_INIT`` a bool default and add ``TRAINER.COOP.W`` and a top-level ``LOSS`` group. It
uses the project's ``clip`` (its folder ships none). Written for tests/test_published_idiom.py, not copied.
"""
import torch
import torch.nn as nn
from torch.nn import functional as F
from torch.nn.modules.loss import _Loss
from yacs.config import CfgNode as CN

from engine import TRAINER_REGISTRY, TrainerX
from engine.metrics import compute_accuracy
from engine.optim import build_optimizer, build_lr_scheduler

from clip import clip

TEMPLATE = "a photo of a {}."


def extend_cfg(cfg):
    cfg.TRAINER.COOP = CN()
    cfg.TRAINER.COOP.N_CTX = 4
    cfg.TRAINER.COOP.CSC = False
    cfg.TRAINER.COOP.CTX_INIT = False  # True: start from TEMPLATE's words
    cfg.TRAINER.COOP.W = 1.0
    cfg.TRAINER.COOP.PREC = "fp16"
    cfg.TRAINER.COOP.CLASS_TOKEN_POSITION = "end"
    cfg.LOSS = CN()
    cfg.LOSS.NAME = ""
    cfg.LOSS.T = 1.0
    cfg.LOSS.LAMBDA = 1.0


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
        if cfg.TRAINER.COOP.CTX_INIT:
            words = TEMPLATE.replace(" {}.", "")
            n_ctx = len(words.split(" "))
            with torch.no_grad():
                ctx_vectors = clip_model.token_embedding(clip.tokenize(words)).type(dtype)[0, 1:1 + n_ctx, :]
        else:
            n_ctx = cfg.TRAINER.COOP.N_CTX
            ctx_vectors = torch.empty(n_ctx, clip_model.ln_final.weight.shape[0], dtype=dtype)
            nn.init.normal_(ctx_vectors, std=0.02)
            words = " ".join(["X"] * n_ctx)
        print(f'Initial context: "{words}"')
        self.ctx = nn.Parameter(ctx_vectors)
        prompts = [words + " " + name.replace("_", " ") + "." for name in classnames]
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
        text_features = self.text_encoder(self.prompt_learner(), self.tokenized_prompts)
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        return self.logit_scale.exp() * image_features @ text_features.t()


class ZeroShotCLIP(nn.Module):
    """The teacher: hand-written prompts on the frozen CLIP."""

    def __init__(self, classnames, clip_model):
        super().__init__()
        with torch.no_grad():
            text = clip_model.encode_text(clip.tokenize([TEMPLATE.format(c) for c in classnames]))
        self.register_buffer("text_features", text / text.norm(dim=-1, keepdim=True))
        self.clip_model = clip_model

    def forward(self, image):
        image_features = self.clip_model.encode_image(image.type(self.clip_model.dtype))
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        return self.clip_model.logit_scale.exp() * image_features @ self.text_features.t()


class GradProjectionLoss(_Loss):
    def __init__(self, T):
        super().__init__()
        self.T = T

    def forward(self, stu_logits, tea_logits, label):
        xe_loss = F.cross_entropy(stu_logits, label)
        tea_prob = F.softmax(tea_logits / self.T, dim=-1)
        kl_loss = (-tea_prob * F.log_softmax(stu_logits / self.T, -1) * self.T * self.T).sum(1).mean()
        return xe_loss, kl_loss


@TRAINER_REGISTRY.register()
class GradProjection(TrainerX):
    def check_cfg(self, cfg):
        assert cfg.TRAINER.COOP.PREC in ["fp16", "fp32", "amp"]

    def build_model(self):
        cfg = self.cfg
        classnames = self.dm.dataset.classnames
        clip_model = load_clip_to_cpu(cfg)
        if cfg.TRAINER.COOP.PREC in ("fp32", "amp"):
            clip_model.float()
        print("Building zeroshot CLIP")
        self.zs_clip = ZeroShotCLIP(classnames, clip_model)
        print("Building custom CLIP")
        self.model = CustomCLIP(cfg, classnames, clip_model)
        for name, param in self.model.named_parameters():
            if "prompt_learner" not in name:
                param.requires_grad_(False)
        self.model.to(self.device)
        self.zs_clip = self.zs_clip.to(self.device)
        self.optim = build_optimizer(self.model.prompt_learner, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model("prompt_learner", self.model.prompt_learner, self.optim, self.sched)
        if cfg.LOSS.NAME == "prograd":
            self.criterion = GradProjectionLoss(T=cfg.LOSS.T)
        else:
            raise NotImplementedError

    def forward_backward(self, batch):
        image, label = self.parse_batch_train(batch)
        output = self.model(image)
        with torch.no_grad():
            zs_clip_output = self.zs_clip(image)
        xe_loss, kl_loss = self.criterion(output, zs_clip_output.detach(), label)
        self.prograd_backward_and_update(xe_loss, kl_loss, self.cfg.LOSS.LAMBDA)
        loss_summary = {"xe_loss": xe_loss.item(), "kl_loss": kl_loss.item(),
                        "acc": compute_accuracy(output, label)[0].item()}
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return loss_summary

    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)
