"""A vision-language prompt trainer in the idiom of MaPLe's ``trainers/maple.py``, with only its Dassl
imports renamed: its folder ships its own ``clip/`` whose ``build_model(state_dict, design_details)``
builds an image tower taking prompt tokens (ours takes one argument). The text context is learnt and
projected to the image tower's width, as MaPLe's shared context is. Written for
tests/test_published_idiom.py, not copied; keep it in that idiom (print, ``clip._MODELS``,
``clip._download``, ``design_details``, ``update_lr()`` at the last batch).
"""
import torch
import torch.nn as nn
from torch.nn import functional as F

from engine import TRAINER_REGISTRY, TrainerX
from engine.metrics import compute_accuracy
from engine.optim import build_optimizer, build_lr_scheduler

from clip import clip
from clip.simple_tokenizer import SimpleTokenizer as _Tokenizer

_tokenizer = _Tokenizer()


def load_clip_to_cpu(cfg):
    url = clip._MODELS[cfg.MODEL.BACKBONE.NAME]
    model_path = clip._download(url)
    try:
        model = torch.jit.load(model_path, map_location="cpu").eval()
        state_dict = None
    except RuntimeError:
        state_dict = torch.load(model_path, map_location="cpu")
    design_details = {"trainer": "DeepPrompt", "vision_ctx": cfg.TRAINER.DEEPPROMPT.N_CTX}
    return clip.build_model(state_dict or model.state_dict(), design_details)


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
        words = cfg.TRAINER.DEEPPROMPT.CTX_INIT.replace("_", " ")
        n_ctx = len(words.split(" "))
        with torch.no_grad():
            embedding = clip_model.token_embedding(clip.tokenize(words)).type(dtype)
        self.ctx = nn.Parameter(embedding[0, 1:1 + n_ctx, :])
        n_visual = cfg.TRAINER.DEEPPROMPT.N_CTX
        # as MaPLe: the image tower's prompts are a projection of (here: the first) text context tokens
        self.proj = nn.Linear(clip_model.ln_final.weight.shape[0], clip_model.visual.conv1.out_channels)
        if cfg.TRAINER.DEEPPROMPT.PREC == "fp16":
            self.proj.half()
        self.n_visual = n_visual
        print(f'Initial context: "{words}"')
        print(f"Number of context words (tokens): {n_ctx}, image-tower prompts: {n_visual}")
        prompts = [words + " " + name.replace("_", " ") + "." for name in classnames]
        tokenized = torch.cat([clip.tokenize(p) for p in prompts])
        with torch.no_grad():
            embedding = clip_model.token_embedding(tokenized).type(dtype)
        self.register_buffer("token_prefix", embedding[:, :1, :])
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx:, :])
        self.n_cls, self.tokenized_prompts = len(classnames), tokenized

    def forward(self):
        ctx = self.ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
        prompts = torch.cat([self.token_prefix, ctx, self.token_suffix], dim=1)
        return prompts, self.proj(self.ctx[:self.n_visual])


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
        prompts, visual_ctx = self.prompt_learner()
        text_features = self.text_encoder(prompts, self.tokenized_prompts)
        image_features = self.image_encoder(image.type(self.dtype), visual_ctx)
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        return self.logit_scale.exp() * image_features @ text_features.t()


@TRAINER_REGISTRY.register()
class DeepPrompt(TrainerX):
    def check_cfg(self, cfg):
        assert cfg.TRAINER.DEEPPROMPT.PREC in ["fp16", "fp32", "amp"]

    def build_model(self):
        cfg = self.cfg
        print(f"Loading CLIP (backbone: {cfg.MODEL.BACKBONE.NAME})")
        clip_model = load_clip_to_cpu(cfg)
        if cfg.TRAINER.DEEPPROMPT.PREC in ("fp32", "amp"):
            clip_model.float()
        self.design_details = clip_model.design_details
        print("Building custom CLIP")
        self.model = CustomCLIP(cfg, self.dm.dataset.classnames, clip_model)
        for name, param in self.model.named_parameters():
            if "prompt_learner" not in name:
                param.requires_grad_(False)
        self.model.to(self.device)
        self.optim = build_optimizer(self.model, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model("MultiModalPromptLearner", self.model, self.optim, self.sched)

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
