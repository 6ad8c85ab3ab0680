"""PromptSRC: Prompting with Self-regulating Constraints (Khattak et al., ICCV 2023), the original's trainer.

Independent deep prompts in both towers (IVLP), regularised towards frozen CLIP, and averaged over
epochs with Gaussian weights:

    text   [SOS] ctx_1..ctx_n "<rest of CTX_INIT> <class>."; text blocks j=1..PROMPT_DEPTH_TEXT-1 replace the
           context slots with their own prompt
    image  N_CTX_VISION tokens appended after the patches (before ln_pre); vision blocks j=1..PROMPT_DEPTH_VISION-1
           replace them with their own prompt (depth 0: no visual prompt)
    loss = CE(logits) + TEXT_LOSS_WEIGHT * L1(text, zero-shot text) + IMAGE_LOSS_WEIGHT * L1(image, zero-shot image)
           + KL(softmax(zero-shot logits) || softmax(logits)) summed / logits.numel()
           (features normalised; zero-shot text = CLIP's features of the 60 ImageNet templates, averaged;
           zero-shot image = CLIP's image encoder without prompts)
    GPA    after epoch e (1..E) the prompts are added to a running sum with weight g(e) / sum g,
           g(x) = N(x; GPA_MEAN, GPA_STD); after the last epoch the prompts are that sum

Keys (``TRAINER.PROMPTSRC``, the original's defaults): N_CTX_VISION 4, N_CTX_TEXT 4, CTX_INIT
"a photo of a", PREC fp16, PROMPT_DEPTH_VISION 9, PROMPT_DEPTH_TEXT 9, TEXT_LOSS_WEIGHT 25,
IMAGE_LOSS_WEIGHT 10, GPA_MEAN 15, GPA_STD 1. Published configs: base-to-new
``vit_b16_c2_ep20_batch4_4+4ctx``, cross-dataset ``..._cross_datasets`` (depth 3, GPA 6/10), few-shot
``vit_b16_c2_ep50_batch4_4+4ctx_few_shot`` (GPA 30/30; StanfordCars, Flowers102, FGVCAircraft, DTD and
EuroSAT use 45/5: ``..._few_shot_gpa45``, the values its yaml gives in a comment).

The prompts enter the image encoder, so PromptSRC trains end to end (no feature cache; one log line
says so). The model is registered as ``VLPromptLearner`` with the original's keys
(``prompt_learner.ctx``, ``image_encoder.VPT``, ``image_encoder.transformer.resblocks.<j>.VPT_shallow``,
``text_encoder.transformer.resblocks.<j>.VPT_shallow``, token prefix/suffix); ours add ``gpa.*`` (the
running average, so a resumed run averages every epoch: the original's restarts from the resumed
epoch), which the original ignores when loading. The zero-shot image features come from the same
frozen encoder without prompts (the original keeps a second fp16 copy and fails at PREC fp32).
"""
import logging
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

import clip
from engine import TRAINER_REGISTRY
from engine.errors import ConfigError
from engine.metrics import compute_accuracy
from engine.protocol import Protocol
from engine.utils.checkpoint import load_pretrained_weights

from .clip_trainer import PRECISIONS, ClassTextOncePerTest, FrozenCLIPTrainer
from .coop import TextEncoder, check_image_size, class_prompt_embeddings
from .deep_prompts import initial_context, prompted_text, prompted_vit, require_vit
from .maple import FROZEN_PREFIXES, adapt_checkpoint

logger = logging.getLogger(__name__)

MODEL_NAME = "VLPromptLearner"  # the original's registered name: its checkpoint folder
SOURCE = ("muzairkhattak/PromptSRC bb95c77: configs/trainers/PromptSRC/*.yaml, scripts/promptsrc/"
          "{base2new_train,few_shot,xd_train}.sh")
# the few-shot yaml's second setting ("StanfordCars, Flowers102, FGVCAircraft, DTD and EuroSAT")
GPA45_DATASETS = ("stanford_cars", "oxford_flowers", "fgvc_aircraft", "dtd", "eurosat")
# trainers/imagenet_templates.py of the original (CLIP's 80-template notebook, the 60 it keeps)
IMAGENET_TEMPLATES = [
    "a photo of a {}.", "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
    "a photo of the hard to see {}.", "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.",
    "a bad photo of the {}.", "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.",
    "a photo of a hard to see {}.", "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.",
    "a dark photo of the {}.", "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.", "a painting of a {}.",
    "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.", "a cropped photo of a {}.",
    "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.",
    "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.", "a {} in a video game.",
    "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.", "the origami {}.", "the {} in a video game.",
    "a sketch of a {}.", "a doodle of the {}.", "a origami {}.", "a low resolution photo of a {}.", "the toy {}.",
    "a rendition of the {}.", "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.",
    "a photo of a nice {}.", "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.",
    "a sketch of the {}.", "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.",
]


def extend_cfg(cfg):
    """TRAINER.PROMPTSRC with the original's keys and defaults (its train.py ``extend_cfg``)."""
    cfg.TRAINER.PROMPTSRC = CN()
    cfg.TRAINER.PROMPTSRC.N_CTX_VISION = 4  # number of context vectors at the vision branch
    cfg.TRAINER.PROMPTSRC.N_CTX_TEXT = 4  # number of context vectors at the language branch
    cfg.TRAINER.PROMPTSRC.CTX_INIT = "a photo of a"  # initialization words
    cfg.TRAINER.PROMPTSRC.PREC = "fp16"  # fp16, fp32, amp
    cfg.TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION = 9  # max 12; 0: no visual prompt
    cfg.TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT = 9  # max 12, at least 1
    cfg.TRAINER.PROMPTSRC.TEXT_LOSS_WEIGHT = 25
    cfg.TRAINER.PROMPTSRC.IMAGE_LOSS_WEIGHT = 10
    cfg.TRAINER.PROMPTSRC.GPA_MEAN = 15
    cfg.TRAINER.PROMPTSRC.GPA_STD = 1


def promptsrc_config(dataset, shots, family):
    """The few-shot config of a dataset (the GPA setting its yaml gives per dataset); base-to-new and the
    cross-dataset/DG source run use ``extra['base2new_config']`` and ``extra['dg_config']``."""
    if not family.startswith("vit"):
        raise ValueError(f"PromptSRC prompts a ViT's layers; it publishes ViT-B/16 settings only, not {family!r}")
    stem = "vit_b16_c2_ep50_batch4_4+4ctx_few_shot"
    return stem + "_gpa45" if dataset in GPA45_DATASETS else stem


def gpa_weights(mean, std, epochs):
    """GPA's weight of each epoch 1..E: the Gaussian density at e, normalised to sum 1."""
    g = [math.exp(-0.5 * ((e - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi)) for e in range(1, epochs + 1)]
    total = sum(g)
    return [x / total for x in g]


def check_promptsrc_cfg(p):
    if p.PREC not in PRECISIONS:
        raise ConfigError(f"TRAINER.PROMPTSRC.PREC must be one of {', '.join(PRECISIONS)}, got {p.PREC!r}.")
    if not isinstance(p.PROMPT_DEPTH_TEXT, int) or p.PROMPT_DEPTH_TEXT < 1:  # original: an assert
        raise ConfigError(f"TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT must be a whole number of at least 1, got "
                          f"{p.PROMPT_DEPTH_TEXT!r}.")
    if not isinstance(p.PROMPT_DEPTH_VISION, int) or p.PROMPT_DEPTH_VISION < 0:
        raise ConfigError(f"TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION must be a whole number of at least 0 (0: no visual "
                          f"prompt), got {p.PROMPT_DEPTH_VISION!r}.")
    for key in ("N_CTX_TEXT", "N_CTX_VISION"):
        if not isinstance(p[key], int) or p[key] < 1:
            raise ConfigError(f"TRAINER.PROMPTSRC.{key} must be a whole number of at least 1, got {p[key]!r}.")
    if not p.GPA_STD > 0:
        raise ConfigError(f"TRAINER.PROMPTSRC.GPA_STD must be above 0, got {p.GPA_STD}.")


class VLPromptLearner(nn.Module):
    """The text context and the frozen class tokens around it; forward() -> prompts [n_cls, L, W]."""

    def __init__(self, classnames, clip_model, n_ctx=4, ctx_init="a photo of a"):
        super().__init__()
        dtype = clip_model.dtype
        # as the original (and MaPLe): the first n_ctx tokens of CTX_INIT are learnt
        ctx, prompt_prefix = initial_context(clip_model, n_ctx, ctx_init, dtype)
        logger.info("Independent V-L design")
        logger.info('Initial text context: "%s"', prompt_prefix)
        logger.info("Number of context words (tokens) for Language prompting: %d", n_ctx)
        self.ctx = nn.Parameter(ctx)
        tokenized, embedding, _ = class_prompt_embeddings(clip_model, classnames, prompt_prefix, dtype)
        self.register_buffer("token_prefix", embedding[:, :1, :])  # SOS
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx:, :])  # rest, EOS
        self.register_buffer("tokenized_prompts", tokenized, persistent=False)
        self.n_cls = len(classnames)

    def forward(self):
        return torch.cat([self.token_prefix, self.ctx.unsqueeze(0).expand(self.n_cls, -1, -1), self.token_suffix], 1)


def _slot(n, width):
    """A module holding one block's prompt as ``VPT_shallow`` (the original's parameter name)."""
    module = nn.Module()
    module.VPT_shallow = nn.Parameter(torch.empty(n, width))
    nn.init.normal_(module.VPT_shallow, std=0.02)
    return module


def tower_prompts(n, width, depth, first):
    """Deep prompts under the original's module path: [VPT] + transformer.resblocks.<j>.VPT_shallow, j=1..depth-1."""
    tower = nn.Module()
    if first:
        tower.VPT = nn.Parameter(torch.empty(n, width))
        nn.init.normal_(tower.VPT, std=0.02)
    tower.transformer = nn.Module()
    tower.transformer.resblocks = nn.ModuleDict({str(j): _slot(n, width) for j in range(1, depth)})
    return tower


class Checkpointed(nn.Module):
    """What is trained and saved, under the original's keys (+ ``gpa.*``, GPA's running sum)."""

    def __init__(self, prompt_learner, clip_model, p):
        super().__init__()
        self.prompt_learner = prompt_learner
        vision_width = clip_model.visual.conv1.weight.shape[0]
        text_width = clip_model.ln_final.weight.shape[0]
        depth_v = p.PROMPT_DEPTH_VISION
        self.image_encoder = tower_prompts(p.N_CTX_VISION, vision_width, depth_v, first=depth_v >= 1)
        self.text_encoder = tower_prompts(p.N_CTX_TEXT, text_width, p.PROMPT_DEPTH_TEXT, first=False)
        self.gpa = nn.Module()
        for name, param in self.learnt():
            self.gpa.register_buffer(name.replace(".", "__"), torch.zeros_like(param))

    def learnt(self):
        return [(n, p) for n, p in self.named_parameters()]

    def visual_prompts(self):
        """(first [n, W] or None, deep list) for prompted_vit."""
        tower = self.image_encoder
        first = getattr(tower, "VPT", None)
        blocks = tower.transformer.resblocks
        return first, [blocks[str(j)].VPT_shallow for j in range(1, len(blocks) + 1)]

    def text_prompts(self):
        blocks = self.text_encoder.transformer.resblocks
        return [blocks[str(j)].VPT_shallow for j in range(1, len(blocks) + 1)]

    @torch.no_grad()
    def gpa_add(self, weight):
        for name, param in self.learnt():
            getattr(self.gpa, name.replace(".", "__")).add_(param.detach() * weight)

    @torch.no_grad()
    def gpa_load(self):
        for name, param in self.learnt():
            param.copy_(getattr(self.gpa, name.replace(".", "__")))


class CustomCLIP(nn.Module):
    """Frozen CLIP with PromptSRC's independent prompts; images [B, 3, H, W] -> logits (and the SCL terms)."""

    def __init__(self, clip_model, prompts, fixed_text):
        super().__init__()
        self.prompts = prompts
        self.prompt_learner = prompts.prompt_learner
        self.image_encoder = clip_model.visual
        self.text_encoder = TextEncoder(clip_model)
        self.logit_scale = clip_model.logit_scale
        self.dtype = clip_model.dtype
        self.register_buffer("fixed_embeddings", fixed_text / fixed_text.norm(dim=-1, keepdim=True))

    def text_features(self):
        learner = self.prompt_learner
        text = prompted_text(self.text_encoder, learner(), learner.tokenized_prompts, self.prompts.text_prompts())
        return text / text.norm(dim=-1, keepdim=True)

    def image_features(self, images):
        images = images.type(self.dtype)
        first, deep = self.prompts.visual_prompts()
        if first is None:
            image = self.image_encoder(images)
        else:
            image = prompted_vit(self.image_encoder, images, first, deep, position="end", norm_prompts=True)
        return image / image.norm(dim=-1, keepdim=True)

    def forward(self, images, text_features=None):
        text = self.text_features() if text_features is None else text_features
        image = self.image_features(images)
        return self.logit_scale.exp() * image.to(text.dtype) @ text.t()

    def losses(self, images, label, text_weight, image_weight):
        """(total loss, logits, {term: value}) of one training step."""
        text = self.text_features()
        image = self.image_features(images)
        scale = self.logit_scale.exp()
        logits = scale * image.to(text.dtype) @ text.t()
        fixed = self.fixed_embeddings.to(text.dtype)
        with torch.no_grad():  # frozen CLIP: the image encoder without prompts, the template ensemble
            zero_shot = self.image_encoder(images.type(self.dtype))
            zero_shot = zero_shot / zero_shot.norm(dim=-1, keepdim=True)
            zero_shot_logits = scale * zero_shot.to(fixed.dtype) @ fixed.t()
        ce = F.cross_entropy(logits.float(), label)
        scl_text = F.l1_loss(text.float(), fixed.float()) * text_weight
        scl_image = F.l1_loss(image.float(), zero_shot.float()) * image_weight
        scl_logits = F.kl_div(F.log_softmax(logits.float(), dim=1), F.log_softmax(zero_shot_logits.float(), dim=1),
                              reduction="sum", log_target=True) / logits.numel()
        terms = {"ce": ce, "scl_text": scl_text, "scl_image": scl_image, "scl_logits": scl_logits}
        return ce + scl_logits + scl_text + scl_image, logits, terms


@torch.no_grad()
def template_features(clip_model, classnames):
    """Frozen CLIP's text features per class: the 60 templates' raw features, averaged (as the original)."""
    device = clip_model.token_embedding.weight.device
    names = [name.replace("_", " ") for name in classnames]
    features = [clip_model.encode_text(clip.tokenize([t.replace("{}", n) for n in names]).to(device)).float()
                for t in IMAGENET_TEMPLATES]
    return torch.stack(features, dim=1).mean(dim=1)


@TRAINER_REGISTRY.register()
class PromptSRC(ClassTextOncePerTest, FrozenCLIPTrainer):
    """Self-regulated deep prompts with GPA, end to end; see the module docstring."""

    protocol = Protocol(
        label="PromptSRC",
        config=promptsrc_config,
        evaluations=("base2new", "dg"),
        end_to_end=True,
        extra={"shots": (1, 2, 4, 8, 16), "families": ("vit_b16",),
               "base2new_config": "vit_b16_c2_ep20_batch4_4+4ctx", "base2new_shots": 16,
               "dg_config": "vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets", "dg_source": "imagenet",
               "gpa45_datasets": GPA45_DATASETS},
        source=SOURCE,
    )
    reads_keys = ("MODEL.INIT_WEIGHTS",)

    def trainer_cfg(self):
        return self.cfg.TRAINER.PROMPTSRC

    def check_cfg(self, cfg):
        check_promptsrc_cfg(cfg.TRAINER.PROMPTSRC)  # first: the message names the group as the config does
        super().check_cfg(cfg)

    def build_model(self):
        cfg, p = self.cfg, self.cfg.TRAINER.PROMPTSRC
        clip_model = self.load_clip()
        require_vit("PromptSRC", cfg, clip_model)
        check_image_size(cfg, clip_model)
        self.configure_input()
        for key, tower in (("PROMPT_DEPTH_VISION", clip_model.visual.transformer), ("PROMPT_DEPTH_TEXT",
                                                                                   clip_model.transformer)):
            if p[key] > len(tower.resblocks):  # as the original: extra prompts exist but no block uses them
                logger.warning("TRAINER.PROMPTSRC.%s %d is more than the tower's %d layers: its prompts %d..%d are "
                               "never used", key, p[key], len(tower.resblocks), len(tower.resblocks), p[key] - 1)
        logger.info("Building custom CLIP")
        classnames = self.dm.dataset.classnames
        learner = VLPromptLearner(classnames, clip_model, p.N_CTX_TEXT, p.CTX_INIT)
        logger.info("Number of context words (tokens) for Vision prompting: %d", p.N_CTX_VISION)
        prompts = Checkpointed(learner, clip_model, p)
        self.model = CustomCLIP(clip_model, prompts, template_features(clip_model, classnames)).to(self.device)
        self.checkpointed = self.model.prompts
        if cfg.MODEL.INIT_WEIGHTS:  # Dassl's rule: every tensor whose name and shape match
            load_pretrained_weights(self.checkpointed, cfg.MODEL.INIT_WEIGHTS)
        self.register_trainable()
        enabled = sorted(n for n, _ in self.checkpointed.learnt())
        logger.info("Parameters to be updated: %s", ", ".join(enabled))
        self.gpa = gpa_weights(p.GPA_MEAN, p.GPA_STD, self.max_epoch)
        logger.info("GPA: epoch weights %s (mean %s, std %s)", ", ".join(f"{w:.3g}" for w in self.gpa), p.GPA_MEAN,
                    p.GPA_STD)
        logger.info("Feature cache off: PromptSRC's prompts enter the image encoder's blocks (PROMPT_DEPTH_VISION "
                    "%d), so the image encoder runs in the loop (end to end)", p.PROMPT_DEPTH_VISION)
        self._eval_text = None

    def trainable_modules(self):
        return {MODEL_NAME: self.checkpointed}

    def forward_backward(self, batch):
        images, label = self.parse_batch_train(batch)
        p = self.cfg.TRAINER.PROMPTSRC
        terms = {}

        def loss_fn():
            loss, output, parts = self.model.losses(images, label, p.TEXT_LOSS_WEIGHT, p.IMAGE_LOSS_WEIGHT)
            terms.update(parts)
            return loss, output

        loss, output = self.step(loss_fn)
        if (self.batch_idx + 1) == self.num_batches:  # an epoch is done: add it to GPA's weighted sum
            self.checkpointed.gpa_add(self.gpa[self.epoch])
            if self.epoch + 1 == self.max_epoch:
                logger.info("Using GPA model for final inference...")
                self.checkpointed.gpa_load()
        summary = {"loss": loss.item(), "acc": compute_accuracy(output, label)[0].item()}
        summary.update({k: v.item() for k, v in terms.items()})
        return summary


    def adapt_state_dict(self, name, state_dict):
        return adapt_checkpoint(self._models[name], state_dict, f"of {name}", method="PromptSRC",
                                frozen_prefixes=FROZEN_PREFIXES + ("prompt_learner.ZS_image_encoder.",),
                                optional=("gpa.",))
