"""CLIP-LoRA: Low-Rank Few-Shot Adaptation of Vision-Language Models (Zanella & Ben Ayed, CVPRW 2024).

Low-rank updates of the attention projections of CLIP's blocks, in both towers, trained on the few-shot
images; the text side is the single prompt "a photo of a <class>." (what every dataset of the original
ends up with):

    W x  ->  W x + (alpha / sqrt(r)) * B A dropout(x)     A [r, in] kaiming-uniform, B [out, r] zeros
    logits = 100 * normalize(image) @ normalize(text)^T   (a fixed scale of 100, not CLIP's), cross-entropy

Keys (``TRAINER.CLIP_LORA``, the original's command-line arguments): R 2 (``--r``), ALPHA 1
(``--alpha``), DROPOUT_RATE 0.25, ENCODER both (text | vision | both), POSITION all (bottom | mid | up |
half-up | half-bottom | all | top3), PARAMS [q, k, v] (any of q, k, v, o), N_ITERS 500 (the run takes
N_ITERS x shots iterations), PREC amp (the original's fp16 autocast + GradScaler). The optimiser is
the original's: AdamW (OPTIM.LR 2e-4, WEIGHT_DECAY 1e-2, betas 0.9/0.999) with a cosine schedule over
all iterations to 1e-6, stepped every iteration; the number of epochs follows from the iterations
(the last one stops part-way), so OPTIM.MAX_EPOCH is not used.

The LoRA matrices change the image encoder, so CLIP-LoRA trains end to end (no feature cache; one log
line says so). The blocks' ``attn`` modules are wrapped (``LoRAAttention``): the frozen
``nn.MultiheadAttention`` stays inside, untouched. Checkpoints (module ``lora``) hold the original's
names flattened: ``layer_<i>.<q_proj|k_proj|v_proj|proj>.w_lora_<A|B>``, layers numbered as the
original's ``apply_lora`` lists them (text blocks first, then vision). ``lora_weights.pt`` in the
original's ``save_lora`` format is written beside each run and read by ``--model-dir`` (with its
metadata checked as the original's ``load_lora`` does), so weights go both ways.
Positions are defined by fractions of each tower's depth, which gives the original's index lists
for its 12-layer towers (and ViT-L/14's 24: half-up/half-bottom/all) and any other depth too.
"""
import logging
import math
import os
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

import clip
from clip.model import VisionTransformer
from engine import TRAINER_REGISTRY
from engine.errors import CheckpointError, ConfigError
from engine.metrics import compute_accuracy
from engine.protocol import Protocol
from engine.utils.checkpoint import load_checkpoint

from .clip_trainer import PRECISIONS, ClassTextOncePerTest, FrozenCLIPTrainer

logger = logging.getLogger(__name__)

MODEL_NAME = "lora"
EXPORT_FILE = "lora_weights.pt"  # the original's --filename default, + .pt
TEMPLATE = "a photo of a {}."  # each of the original's datasets overrides its template to this one
LOGIT_SCALE = 100.0  # the original's fixed scale
ENCODERS = ("text", "vision", "both")
POSITIONS = ("bottom", "mid", "up", "half-up", "half-bottom", "all", "top3")
PARAMS = ("q", "k", "v", "o")
PROJ_NAMES = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "proj"}  # the original's module names
SOURCE = "MaxZanella/CLIP-LoRA 358f0d7: run_utils.py arguments, lora.py (500 x shots iterations), loralib/"


def extend_cfg(cfg):
    """TRAINER.CLIP_LORA: the original's arguments and defaults (run_utils.get_arguments)."""
    cfg.TRAINER.CLIP_LORA = CN()
    cfg.TRAINER.CLIP_LORA.R = 2  # the rank of the low-rank matrices
    cfg.TRAINER.CLIP_LORA.ALPHA = 1  # scaling: alpha / sqrt(r)
    cfg.TRAINER.CLIP_LORA.DROPOUT_RATE = 0.25  # dropout before the LoRA matrices
    cfg.TRAINER.CLIP_LORA.ENCODER = "both"  # text, vision, both
    cfg.TRAINER.CLIP_LORA.POSITION = "all"  # which blocks (see POSITIONS)
    cfg.TRAINER.CLIP_LORA.PARAMS = ["q", "k", "v"]  # attention matrices with a LoRA (q, k, v, o)
    cfg.TRAINER.CLIP_LORA.N_ITERS = 500  # iterations per shot
    cfg.TRAINER.CLIP_LORA.PREC = "amp"  # the original: fp16 autocast + GradScaler


def clip_lora_config(dataset, shots, family):
    """One published setting for every dataset and shot count: the config of the backbone."""
    if family not in ("vit_b16", "vit_b32", "vit_l14"):
        raise ValueError(f"CLIP-LoRA publishes ViT-B/16, ViT-B/32 and ViT-L/14 settings, not {family!r}")
    return family


def block_indices(position, layers):
    """The blocks of a ``layers``-deep tower that get a LoRA: thirds, halves, all or the top 3."""
    third, half = layers // 3, layers // 2
    ranges = {"bottom": range(0, third), "mid": range(third, 2 * third), "up": range(2 * third, layers),
              "half-bottom": range(0, half), "half-up": range(half, layers), "all": range(layers),
              "top3": range(max(0, layers - 3), layers)}
    return list(ranges[position])


def check_lora_cfg(c):
    if c.PREC not in PRECISIONS:
        raise ConfigError(f"TRAINER.CLIP_LORA.PREC must be one of {', '.join(PRECISIONS)}, got {c.PREC!r}.")
    if c.ENCODER not in ENCODERS:
        raise ConfigError(f"TRAINER.CLIP_LORA.ENCODER must be one of {', '.join(ENCODERS)}, got {c.ENCODER!r}.")
    if c.POSITION not in POSITIONS:
        raise ConfigError(f"TRAINER.CLIP_LORA.POSITION must be one of {', '.join(POSITIONS)}, got {c.POSITION!r}.")
    bad = [p for p in c.PARAMS if p not in PARAMS]
    if bad or not c.PARAMS:
        raise ConfigError(f"TRAINER.CLIP_LORA.PARAMS must list some of {', '.join(PARAMS)}, got {list(c.PARAMS)!r}.")
    if not isinstance(c.R, int) or c.R < 1:
        raise ConfigError(f"TRAINER.CLIP_LORA.R must be a whole number of at least 1, got {c.R!r}.")
    if not 0.0 <= c.DROPOUT_RATE < 1.0:
        raise ConfigError(f"TRAINER.CLIP_LORA.DROPOUT_RATE must be in [0, 1), got {c.DROPOUT_RATE}.")
    if not isinstance(c.N_ITERS, int) or c.N_ITERS < 1:
        raise ConfigError(f"TRAINER.CLIP_LORA.N_ITERS must be a whole number of at least 1, got {c.N_ITERS!r}.")


class LoRA(nn.Module):
    """One low-rank update ``scaling * B A dropout(x)`` of a frozen [out, in] matrix."""

    def __init__(self, n_in, n_out, r, alpha, dropout):
        super().__init__()
        self.w_lora_A = nn.Parameter(torch.zeros(r, n_in))
        self.w_lora_B = nn.Parameter(torch.zeros(n_out, r))
        nn.init.kaiming_uniform_(self.w_lora_A, a=math.sqrt(5))  # as nn.Linear's weight; B stays zero
        self.scaling = alpha / math.sqrt(r)  # the original's (not LoRA's alpha / r)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x):
        return F.linear(F.linear(self.dropout(x), self.w_lora_A.to(x.dtype)), self.w_lora_B.to(x.dtype)) * self.scaling


class LoRAAttention(nn.Module):
    """A frozen sequence-first ``nn.MultiheadAttention`` with LoRA updates of its q/k/v/out projections;
    called as the block calls ``attn`` (query, key, value, need_weights, attn_mask)."""

    def __init__(self, base, loras):
        super().__init__()
        if base.batch_first or base.in_proj_weight is None:
            raise ConfigError("CLIP-LoRA needs OpenAI's attention layout (packed q/k/v, sequence-first); "
                              "this backbone's attention has another.")
        self.base = base
        self.loras = loras  # {"q": LoRA, ...}; a shared ModuleDict, also held by the checkpointed tree

    def forward(self, query, key, value, need_weights=False, attn_mask=None):
        base = self.base
        w_q, w_k, w_v = base.in_proj_weight.chunk(3)
        b_q, b_k, b_v = base.in_proj_bias.chunk(3) if base.in_proj_bias is not None else (None,) * 3
        q, k, v = F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)
        if "q" in self.loras:
            q = q + self.loras["q"](query)
        if "k" in self.loras:
            k = k + self.loras["k"](key)
        if "v" in self.loras:
            v = v + self.loras["v"](value)
        length, batch, width = q.shape
        heads = base.num_heads

        def split(t):  # (L, N, W) -> (N, heads, L, W / heads)
            return t.reshape(t.shape[0], batch, heads, width // heads).permute(1, 2, 0, 3)

        if attn_mask is not None:
            attn_mask = attn_mask.to(q.dtype)
        out = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=attn_mask)
        out = out.permute(2, 0, 1, 3).reshape(length, batch, width)
        result = F.linear(out, base.out_proj.weight, base.out_proj.bias)
        if "o" in self.loras:
            result = result + self.loras["o"](out)
        return result, None


def apply_lora(clip_model, c):
    """Wrap the chosen blocks' attention; returns the LoRA layers in the original's order as a ModuleDict
    ``layer_<i>`` -> {q_proj, k_proj, v_proj, proj}."""
    towers = []
    if c.ENCODER in ("text", "both"):
        towers.append(clip_model.transformer)
    if c.ENCODER in ("vision", "both"):
        if not isinstance(clip_model.visual, VisionTransformer):
            raise ConfigError(f"TRAINER.CLIP_LORA.ENCODER is {c.ENCODER!r} but the image encoder is a "
                              f"{type(clip_model.visual).__name__}; CLIP-LoRA adapts a ViT's attention "
                              "(use a ViT-* backbone or ENCODER text).")
        towers.append(clip_model.visual.transformer)
    layers = nn.ModuleDict()
    for tower in towers:
        blocks = tower.resblocks
        for i in block_indices(c.POSITION, len(blocks)):
            attn = blocks[i].attn
            width = attn.embed_dim
            loras = nn.ModuleDict({PROJ_NAMES[p]: LoRA(width, width, c.R, c.ALPHA, c.DROPOUT_RATE)
                                   for p in PARAMS if p in c.PARAMS})
            blocks[i].attn = LoRAAttention(attn, {p: loras[PROJ_NAMES[p]] for p in PARAMS if p in c.PARAMS})
            layers[f"layer_{len(layers)}"] = loras
    return layers


def lora_file_tensors(state_dict):
    """Our checkpoint's state dict -> {(layer index, proj name, 'A'|'B'): tensor} (for comparisons)."""
    out = {}
    for key, value in state_dict.items():
        layer, proj, name = key.split(".")
        out[(int(layer.split("_")[1]), proj, name[-1])] = value
    return out


def metadata(c):
    return {"r": c.R, "alpha": c.ALPHA, "encoder": c.ENCODER, "params": list(c.PARAMS), "position": c.POSITION}


def export_original(layers, c, path):
    """The original's save_lora file: {'weights': {layer_i: {proj: {w_lora_A, w_lora_B}}}, 'metadata'}."""
    weights = {name: {proj: {"w_lora_A": m.w_lora_A.detach().cpu(), "w_lora_B": m.w_lora_B.detach().cpu()}
                      for proj, m in layer.items()} for name, layer in layers.items()}
    tmp = path + ".tmp"
    torch.save({"weights": weights, "metadata": metadata(c)}, tmp)
    os.replace(tmp, path)


def import_original(path, c, layers):
    """Our state dict from the original's save_lora file, after its load_lora's metadata checks."""
    data = load_checkpoint(path)
    if not isinstance(data, dict) or "weights" not in data or "metadata" not in data:
        raise CheckpointError(f"{path} is not a CLIP-LoRA weights file (no 'weights' and 'metadata'); pass the "
                              "lora_weights.pt that CLIP-LoRA's --save_path wrote.")
    for key, value in metadata(c).items():
        if data["metadata"].get(key) != value:
            raise CheckpointError(f"{path} was trained with {key} {data['metadata'].get(key)!r}, this run has "
                                  f"TRAINER.CLIP_LORA.{key.upper()} {value!r}; set it to match.")
    state = {}
    for name, layer in data["weights"].items():
        for proj, ab in layer.items():
            for ab_name, tensor in ab.items():
                state[f"{name}.{proj}.{ab_name}"] = tensor
    own = set(layers.state_dict())
    if set(state) != own:
        raise CheckpointError(f"{path} holds {len(state)} LoRA matrices, this model has {len(own)} (another "
                              "backbone depth?); use weights trained on the same backbone.")
    return state


class CustomCLIP(nn.Module):
    """CLIP with LoRA-wrapped attention; text from the one template, logits at the fixed scale 100."""

    def __init__(self, clip_model, classnames, encoder):
        super().__init__()
        self.clip = clip_model
        self.encoder = encoder
        texts = [TEMPLATE.format(name.replace("_", " ")) for name in classnames]
        self.register_buffer("tokens", clip.tokenize(texts), persistent=False)

    def text_features(self):
        text = self.clip.encode_text(self.tokens)
        return text / text.norm(dim=-1, keepdim=True)

    def image_features(self, images):
        image = self.clip.encode_image(images)
        return image / image.norm(dim=-1, keepdim=True)

    def forward(self, images, text_features=None):
        if text_features is None:
            if self.encoder == "vision":  # the text tower is unchanged: no gradient through it
                with torch.no_grad():
                    text_features = self.text_features()
            else:
                text_features = self.text_features()
        if self.encoder == "text":
            with torch.no_grad():
                image = self.image_features(images)
        else:
            image = self.image_features(images)
        return LOGIT_SCALE * image.to(text_features.dtype) @ text_features.t()


@TRAINER_REGISTRY.register()
class CLIP_LoRA(ClassTextOncePerTest, FrozenCLIPTrainer):
    """LoRA in CLIP's attention, end to end; see the module docstring."""

    protocol = Protocol(
        label="CLIP-LoRA",
        config=clip_lora_config,
        evaluations=(),
        end_to_end=True,
        extra={"shots": (1, 2, 4, 8, 16), "families": ("vit_b16", "vit_b32", "vit_l14"),
               "iterations_per_shot": 500},
        source=SOURCE,
    )

    reads_keys = ("MODEL.INIT_WEIGHTS",)

    def trainer_cfg(self):
        return self.cfg.TRAINER.CLIP_LORA

    def read_weights(self, path, hint=""):
        """A state dict for ``self.lora`` from the original's save_lora file or one of our checkpoints."""
        data = load_checkpoint(path)
        if isinstance(data, dict) and "weights" in data and "metadata" in data:
            return import_original(path, self.cfg.TRAINER.CLIP_LORA, self.lora)
        state = data.get("state_dict", data) if isinstance(data, dict) else data
        if set(state) != set(self.lora.state_dict()):
            raise CheckpointError(f"{path}{hint} holds no LoRA matrices of this model (keys {sorted(state)[:3]} ...); "
                                  "pass a lora_weights.pt or a lora/model.pth.tar-N of the same backbone and settings.")
        return state

    def check_cfg(self, cfg):
        check_lora_cfg(cfg.TRAINER.CLIP_LORA)  # first: the message names the group as the config does
        if cfg.DATASET.NUM_SHOTS < 1:
            raise ConfigError(f"CLIP-LoRA trains TRAINER.CLIP_LORA.N_ITERS x shots iterations, but DATASET.NUM_SHOTS is "
                              f"{cfg.DATASET.NUM_SHOTS}; set the few-shot count (1, 2, 4, 8, 16 as published).")
        super().check_cfg(cfg)

    def precision(self):
        prec = self.trainer_cfg().PREC
        if prec == "amp" and self.device.type != "cuda":
            # the original's autocast(device_type="cuda") and GradScaler are off on a CPU too
            warnings.warn("PREC amp (fp16 autocast) needs a GPU; running in fp32 on the CPU", stacklevel=2)
            return "fp32"
        return super().precision()

    def build_model(self):
        cfg, c = self.cfg, self.cfg.TRAINER.CLIP_LORA
        clip_model = self.load_clip()
        self.configure_input()
        logger.info("Building CLIP-LoRA: r %d, alpha %s, dropout %s, encoder %s, position %s, params %s",
                    c.R, c.ALPHA, c.DROPOUT_RATE, c.ENCODER, c.POSITION, ",".join(c.PARAMS))
        self.lora = apply_lora(clip_model, c)
        if cfg.MODEL.INIT_WEIGHTS:  # start from given matrices: the original's lora_weights.pt or our checkpoint
            self.lora.load_state_dict(self.read_weights(cfg.MODEL.INIT_WEIGHTS, " (MODEL.INIT_WEIGHTS)"))
            logger.info("Initialized the LoRA matrices from %s", cfg.MODEL.INIT_WEIGHTS)
        self.lora.to(self.device)
        self.model = CustomCLIP(clip_model, self.dm.dataset.classnames, c.ENCODER).to(self.device)
        for name, param in self.model.named_parameters():
            param.requires_grad_(False)
        for param in self.lora.parameters():
            param.requires_grad_(True)
        self.total_iters = c.N_ITERS * cfg.DATASET.NUM_SHOTS
        self.iters_per_epoch = len(self.train_loader_x)
        self.max_epoch = math.ceil(self.total_iters / self.iters_per_epoch)
        self.optim = torch.optim.AdamW(self.lora.parameters(), lr=cfg.OPTIM.LR, weight_decay=cfg.OPTIM.WEIGHT_DECAY,
                                       betas=(cfg.OPTIM.ADAM_BETA1, cfg.OPTIM.ADAM_BETA2))
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.optim, self.total_iters, eta_min=1e-6)
        self.register_model(MODEL_NAME, self.lora, self.optim, self.sched)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.prec == "amp" else None
        n_params = sum(p.numel() for p in self.lora.parameters())
        logger.info("CLIP-LoRA: %d LoRA layers, %d parameters; %d iterations (N_ITERS %d x %d shots) = %d epochs "
                    "of %d batches (OPTIM.MAX_EPOCH not used)", len(self.lora), n_params, self.total_iters,
                    c.N_ITERS, cfg.DATASET.NUM_SHOTS, self.max_epoch, self.iters_per_epoch)
        logger.info("Feature cache off: LoRA changes the %s encoder%s (TRAINER.CLIP_LORA.ENCODER %s), so %s in the "
                    "loop (end to end)", "text and image" if c.ENCODER == "both" else c.ENCODER,
                    "s" if c.ENCODER == "both" else "", c.ENCODER,
                    "the image encoder runs" if c.ENCODER != "text" else "both encoders run")
        self._eval_text = None

    # the last epoch stops part-way, at N_ITERS x shots iterations
    def count_batches(self):
        return min(self.iters_per_epoch, self.total_iters - self.epoch * self.iters_per_epoch)

    def batches(self):
        remaining = self.count_batches()
        for i, batch in enumerate(self.train_loader_x):
            if i >= remaining:
                return
            yield (batch,)

    def forward_backward(self, batch):
        images, label = self.parse_batch_train(batch)

        def loss_fn():  # under amp, autocast computes cross-entropy in fp32 whatever the logits' dtype
            output = self.model(images)
            return F.cross_entropy(output.float(), label), output

        loss, output = self.optimise(loss_fn)
        self.sched.step()  # the original: every iteration
        return {"loss": loss.item(), "acc": compute_accuracy(output, label)[0].item()}

    def after_train(self):
        export_original(self.lora, self.cfg.TRAINER.CLIP_LORA, os.path.join(self.output_dir, EXPORT_FILE))
        logger.info("LoRA weights in the original's format: %s", os.path.join(self.output_dir, EXPORT_FILE))
        super().after_train()


    def load_model(self, directory, epoch=None):
        """Our checkpoint (``<dir>/lora/``), or the original's ``lora_weights.pt`` (the file, or a folder holding it)."""
        path = directory if directory and os.path.isfile(directory) else os.path.join(directory or "", EXPORT_FILE)
        if directory and not os.path.isdir(os.path.join(directory, MODEL_NAME)) and os.path.isfile(path):
            self.lora.load_state_dict(self.read_weights(path))
            logger.info('Loaded LoRA weights (the original\'s format) from "%s"', path)
            return
        super().load_model(directory, epoch)
