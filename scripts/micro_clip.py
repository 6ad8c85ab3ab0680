"""A micro-CLIP pretrained here, contrastively, on Fashion-MNIST's train images: the demo's model
when no real CLIP weights are cached.

    python scripts/micro_clip.py OUT.pt [--steps N] [--seed S] [--batch-size B] [--threads T] [--evaluate]
    ensure_micro_clip(cache_dir) -> path     (built on first use, then read from the cache)

The file is an OpenAI-format CLIP state dict (ViT 224 px / patch 32, 2 layers x 64 wide; text
1 layer x 64, context 77, vocabulary 49408; embedding 64; fp16, ~7 MB), so `clip.load(path)`
builds it like real weights. Pretraining sees only the official train split; the demo tests on
t10k.

The image features are real because the patch embedding is folded: a 28 px image becomes 224 px
by blowing each source pixel up to an 8x8 block, so conv1 [W, 3, 32, 32] is trained as a
[W, 4, 4] grid, one weight per source pixel of a patch, each a constant 8x8 block of the saved
conv1 (a free 32x32x3 conv1 learns much weaker features in the same time, MEASURED.md). The
saved file holds the plain conv1 this grid makes. Pretraining computes the test pipeline
(bicubic resize 28 -> 224 px, normalisation, conv1) exactly, as a product with the resize's
block sums (PIL's rounding of the resized PNG to uint8 is the only difference: cosine > 0.999).
The text tower is causal and reads the end-of-text token, so training on captions cut to their
longest length computes what the 77-token path computes.

The file's logit scale is 100, CLIP's own (CLIP's learned scale sits at its cap of 100), not the
~13 pretraining learns here: the tuning methods train through these logits, and at 12.8 the
SGD-trained ones got gradients 8x smaller than on CLIP (CLIP-Adapter never left zero-shot).
Zero-shot predictions and features do not depend on it. (Pretraining at a fixed 100 from the
start does not learn: loss still log(batch) after 200 steps, measured.)

Transfer is made real but imperfect by the captions (not the images): shirts are named
"T-shirt or top" in most of their captions, sneakers and ankle boots are swapped in most of
theirs, so zero-shot errs where a few labelled shots can correct the text side; captions carry
brightness words the class prompts lack, and every caption in a batch that is identical to an
image's caption counts as its positive. The text projection is finally rescaled so class prompt
features have a fixed norm (TEXT_FEATURE_NORM, why: see there); cosines do not change. Half the
images are seen as random resized crops, as the few-shot trainers' training views are.

The same recipe gives the same file, byte for byte, on any x86 CPU and thread count: the build
runs in float64 on one thread and rounds every weight to a multiple of 2^-STATE_BITS after
initialisation and after each step, so the last-bit differences of float reductions (summation
order, SIMD width, FMA) stay far below that grid and never accumulate from step to step; image
statistics are computed on the uint8 pixels as integers. The .json beside the file holds the
recipe, its hash and the file's sha256.
"""
import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections import OrderedDict

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

logger = logging.getLogger(__name__)

FILE_NAME = "micro-clip-fmnist.pt"
# Bumped whenever the code changes what a recipe builds (the metadata's hash covers it).
BUILD_VERSION = 3

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VOCAB_SIZE = 49408
CONTEXT_LENGTH = 77
SOURCE_SIZE = 28


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Everything that decides the built file; its hash keys the cache."""
    seed: int = 1
    steps: int = 1600                 # optimiser steps
    batch_size: int = 64
    lr: float = 3e-3                  # AdamW, cosine to 0 after a 5 % linear warm-up
    weight_decay: float = 0.1
    image_resolution: int = 224       # what the saved model expects (OpenAI's ViT-B/32 input)
    patch_size: int = 32
    patch_grid: int = 4               # conv1 trained as [W, grid, grid]: one weight per source pixel
    vision_width: int = 64            # heads = width // 64, as OpenAI's builder infers
    vision_layers: int = 2
    text_width: int = 64
    text_layers: int = 1
    embed_dim: int = 64
    logit_scale: float = 100.0        # written to the file: CLIP's (pretraining learns its own, capped at 100)
    # P(a class is named as its look-alike in a caption): (class, look-alike, probability). Above
    # 0.5 the majority caption is wrong, so zero-shot errors are text-side, which few shots fix.
    misnaming: tuple = ((6, 0, 0.7), (7, 9, 0.62), (9, 7, 0.62))
    text_feature_norm: float = 3.0    # norm of "a photo of a {class}." features after rescaling
    # Share of images seen as a random resized crop (+ flip) with these area bounds, as the few-shot
    # trainers' views are (random_resized_crop, scale 0.08-1): their features must stay meaningful.
    crop_p: float = 0.5
    crop_scale: tuple = (0.08, 1.0)
    state_bits: int = 20              # weights are multiples of 2^-state_bits after every step
    version: int = BUILD_VERSION

    def digest(self):
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# Real CLIP's prompt features are not unit vectors: TaskRes adds its residual (trained by Adam,
# whose steps are about LR per coordinate) to these raw features, so their per-coordinate size
# sets how far a few epochs move the classifier. With norm ~15 over 64 coordinates the residual
# barely moved it (MEASURED.md); measured on an earlier micro-CLIP (3 seeds, same file rescaled):
# norm 1.5 left TaskRes at zero-shot at 1 and 4 shots (61.0 / 61.2 vs 61.3 %), 3.0 put it above at
# 1/4/16 shots (62.8 / 62.6 / 63.7). 3.0 / sqrt(64) ~ 0.375 per coordinate is a feature of norm ~12
# over RN50's 1024 coordinates (real RN50's norm was not measured here: no weights on this machine).
TEXT_FEATURE_NORM = Recipe.text_feature_norm

# Templates of the pretraining captions; "{}" is "[brightness ]class name". The demo's prompt
# "a photo of a {}." is among them, but never without a brightness word.
CAPTION_TEMPLATES = ("a photo of a {}.", "a {}.", "a picture of a {}.", "a product photo of a {}.",
                     "a {} on a plain background.")
BRIGHTNESS = ("dark", "bright")


# ---- the model, in OpenAI's module layout (its state dict keys are OpenAI's) --------------------
class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, width // 64)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, width * 4)), ("gelu", QuickGELU()),
                                              ("c_proj", nn.Linear(width * 4, width))]))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x, mask=None):  # x: [L, N, D], as OpenAI's
        x = x + self.attention(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))

    def attention(self, x, mask):
        # nn.MultiheadAttention's math on its own weights: its module call costs twice as much
        # at these sizes on a CPU.
        length, batch, width = x.shape
        heads = self.attn.num_heads
        q, k, v = (t.reshape(length, batch * heads, width // heads).transpose(0, 1)
                   for t in F.linear(x, self.attn.in_proj_weight, self.attn.in_proj_bias).chunk(3, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.attn.out_proj(out.transpose(0, 1).reshape(length, batch, width))


class Transformer(nn.Module):
    def __init__(self, width, layers):
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width) for _ in range(layers)])

    def forward(self, x, mask=None):
        for block in self.resblocks:
            x = block(x, mask)
        return x


class VisionTower(nn.Module):
    def __init__(self, r):
        super().__init__()
        width, grid = r.vision_width, r.image_resolution // r.patch_size
        scale = width ** -0.5
        self.conv1 = nn.Conv2d(3, width, r.patch_size, stride=r.patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, r.vision_layers)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, r.embed_dim))

    def from_patches(self, x):
        """Patch embeddings [N, grid*grid, width] -> image features [N, embed_dim]."""
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = self.ln_pre(torch.cat([cls, x], dim=1) + self.positional_embedding)
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        return self.ln_post(x[:, 0]) @ self.proj

    def forward(self, images):  # the standard path: normalised images [N, 3, 224, 224]
        return self.from_patches(self.conv1(images).flatten(2).transpose(1, 2))


class MicroCLIP(nn.Module):
    """OpenAI's CLIP layout with a ViT image tower; `state_dict()` is an OpenAI-format checkpoint."""

    def __init__(self, r):
        super().__init__()
        self.visual = VisionTower(r)
        self.token_embedding = nn.Embedding(VOCAB_SIZE, r.text_width)
        self.positional_embedding = nn.Parameter(torch.empty(CONTEXT_LENGTH, r.text_width))
        self.transformer = Transformer(r.text_width, r.text_layers)
        self.ln_final = nn.LayerNorm(r.text_width)
        self.text_projection = nn.Parameter(torch.empty(r.text_width, r.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self._init_openai_style(r)

    def _init_openai_style(self, r):
        # OpenAI's initialize_parameters: small embeddings, residual branches scaled by depth.
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        for tower, width, layers in ((self.transformer, r.text_width, r.text_layers),
                                     (self.visual.transformer, r.vision_width, r.vision_layers)):
            for block in tower.resblocks:
                nn.init.normal_(block.attn.in_proj_weight, std=width ** -0.5)
                nn.init.normal_(block.attn.out_proj.weight, std=width ** -0.5 * (2 * layers) ** -0.5)
                nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
                nn.init.normal_(block.mlp.c_proj.weight, std=width ** -0.5 * (2 * layers) ** -0.5)
        nn.init.normal_(self.text_projection, std=r.text_width ** -0.5)

    def encode_text(self, tokens):
        """Token ids [N, L] (any L <= 77) -> text features [N, embed_dim], read at the end token."""
        return self.text_from_embeddings(self.token_embedding(tokens), tokens.argmax(dim=-1))

    def text_from_embeddings(self, x, end):
        """Token embeddings [N, L, width] and the end token's index per row -> text features."""
        length = x.shape[1]
        x = x + self.positional_embedding[:length]
        causal = torch.full((length, length), float("-inf"), dtype=x.dtype).triu_(1)
        x = self.transformer(x.permute(1, 0, 2), causal).permute(1, 0, 2)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0]), end] @ self.text_projection


# ---- the folded patch embedding and its cheap exact path --------------------------------------
def block_size(recipe):
    return recipe.patch_size // recipe.patch_grid


def fold_scale(recipe):
    """conv1 = fold_scale * the grid, each entry repeated over a block and the 3 channels.

    1 / (3 * block pixels): a conv1 entry then weighs its pixel as much as a grid entry weighs its
    block, whatever the block size.
    """
    return 1.0 / (3 * block_size(recipe) ** 2)


def conv1_from_grid(grid, recipe):
    """The plain conv1 weight [W, 3, P, P] a grid [W, g, g] makes (constant blocks, equal channels)."""
    b = block_size(recipe)
    blocks = grid.repeat_interleave(b, dim=1).repeat_interleave(b, dim=2)
    return (fold_scale(recipe) * blocks)[:, None].expand(-1, 3, -1, -1).contiguous()


def grid_from_conv1(conv_weight, recipe):
    """The grid a folded conv1 was made from (its block means over the channels)."""
    width, g, b = conv_weight.shape[0], recipe.patch_grid, block_size(recipe)
    return conv_weight.mean(1).reshape(width, g, b, g, b).mean((2, 4)) / fold_scale(recipe)


def resize_matrix(src=SOURCE_SIZE, dst=224):
    """[dst, src] float64 matrix of PIL's bicubic resize along one axis (PIL resizes separably)."""
    from PIL import Image

    cols = []
    for j in range(src):
        row = np.zeros((1, src), dtype=np.float32)
        row[0, j] = 1.0
        out = Image.fromarray(row, mode="F").resize((dst, 1), Image.BICUBIC)
        cols.append(np.asarray(out, dtype=np.float64)[0])
    return torch.from_numpy(np.stack(cols, axis=1))


def block_resize_matrix(recipe):
    """[dst / block, 28]: the resize's rows summed over each conv1 block (rows of `resize_matrix`)."""
    resize = resize_matrix(dst=recipe.image_resolution)
    return resize.view(-1, block_size(recipe), resize.shape[1]).sum(1)


def patch_embeddings(grid, images, block_resize, recipe):
    """Grid [W, g, g], images [N, 28, 28] in [0, 1] -> patch embeddings [N, patches, W], as conv1.

    conv1 of the normalised 224 px image: each channel c is (resized - mean_c) / std_c and every
    weight of a block equals fold_scale * its grid entry, so a patch's embedding is the grid
    against the resized image's block sums, less a constant per grid row.
    """
    g = recipe.patch_grid
    sums = block_resize @ images @ block_resize.t()                       # [N, blocks, blocks]
    patches = sums.unfold(1, g, g).unfold(2, g, g).reshape(len(images), -1, g * g)
    inv_std = sum(1.0 / s for s in CLIP_STD)
    mean_over_std = sum(m / s for m, s in zip(CLIP_MEAN, CLIP_STD))
    scale = fold_scale(recipe)
    flat = grid.reshape(grid.shape[0], g * g)
    offset = scale * block_size(recipe) ** 2 * mean_over_std * flat.sum(1)
    return scale * inv_std * (patches @ flat.t()) - offset


def encode_small_images(model, images, recipe, grid=None, block_resize=None):
    """Image features of 28 px images [N, 28, 28] in [0, 1] through the cheap path.

    `grid` defaults to the one the model's (folded) conv1 was made from.
    """
    grid = grid_from_conv1(model.visual.conv1.weight, recipe) if grid is None else grid
    block_resize = block_resize_matrix(recipe).to(images.dtype) if block_resize is None else block_resize
    return model.visual.from_patches(patch_embeddings(grid, images, block_resize, recipe))


def random_resized_crops(images, recipe, generator):
    """torchvision's RandomResizedCrop + horizontal flip on 28 px images [N, 28, 28], kept at 28 px.

    A crop of the small image resampled to 28 px, then (cheap path) to 224 px, stands for the
    crop the trainers take of the PNG and resize to 224 px. A share 1 - crop_p stays whole.
    """
    n, dtype = len(images), images.dtype
    area = torch.empty(n, dtype=dtype).uniform_(*recipe.crop_scale, generator=generator)
    log_ratio = torch.empty(n, dtype=dtype).uniform_(math.log(3 / 4), math.log(4 / 3), generator=generator)
    width = (area * log_ratio.exp()).sqrt().clamp(max=1.0)
    height = (area / log_ratio.exp()).sqrt().clamp(max=1.0)
    cx = (1 - width) * (2 * torch.rand(n, generator=generator, dtype=dtype) - 1)  # crop centre in [-1, 1] coordinates
    cy = (1 - height) * (2 * torch.rand(n, generator=generator, dtype=dtype) - 1)
    flip = torch.where(torch.rand(n, generator=generator, dtype=dtype) < 0.5, -1.0, 1.0)
    keep = torch.rand(n, generator=generator, dtype=dtype) >= recipe.crop_p
    width, height, cx, cy, flip = (torch.where(keep, d, v) for v, d in
                                   ((width, 1.0), (height, 1.0), (cx, 0.0), (cy, 0.0), (flip, 1.0)))
    theta = torch.zeros(n, 2, 3, dtype=dtype)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = width * flip, cx, height, cy
    grid = F.affine_grid(theta, (n, 1, SOURCE_SIZE, SOURCE_SIZE), align_corners=False)
    return F.grid_sample(images[:, None], grid, mode="bilinear", padding_mode="border", align_corners=False)[:, 0]


# ---- captions ---------------------------------------------------------------------------------
def caption_table(classnames):
    """All pretraining captions, as (text, class named, brightness index) in a fixed order."""
    return [(template.format(f"{BRIGHTNESS[b]} {name}"), c, b)
            for c, name in enumerate(classnames) for b in range(len(BRIGHTNESS))
            for template in CAPTION_TEMPLATES]


def brightness_of(pixels):
    """0 (dark) / 1 (bright) per uint8 image [N, 28, 28]: its mean ink against the train median.

    Ink is the mean of the pixels above 25 (0.1 in [0, 1]), from integer sums: one division per
    image, so the same on every CPU.
    """
    flat = pixels.flatten(1).long()
    total = flat.sum(1)
    count = (flat > 25).sum(1).clamp(min=1)
    ink = total.double() / count.double()
    return (ink > ink.median()).long()


def sample_captions(labels, bright, recipe, generator):
    """One caption index per image: a template, the (sometimes misnamed) class, its brightness."""
    named = labels.clone()
    for cls, lookalike, p in recipe.misnaming:
        flip = (labels == cls) & (torch.rand(len(labels), generator=generator) < p)
        named[flip] = lookalike
    template = torch.randint(len(CAPTION_TEMPLATES), (len(labels),), generator=generator)
    return (named * len(BRIGHTNESS) + bright) * len(CAPTION_TEMPLATES) + template


# ---- data -------------------------------------------------------------------------------------
def _load_split(split):
    from datasets.fashion_mnist import DEBIAN_DIR, FILES, _find, find_source_dir, read_idx

    folder = find_source_dir(DEBIAN_DIR)
    images = read_idx(_find(folder, FILES[split][0]), 2051)
    labels = read_idx(_find(folder, FILES[split][1]), 2049)
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def load_train_images():
    """Fashion-MNIST's official train split: uint8 images [60000, 28, 28], labels, class names."""
    from datasets.fashion_mnist import CLASSNAMES

    return (*_load_split("train"), CLASSNAMES)


def load_test_images():
    """t10k: uint8 images [10000, 28, 28] and labels."""
    return _load_split("test")


def to_unit(pixels, dtype=torch.float32):
    """uint8 images -> values in [0, 1] (each one division: exact rounding, the same everywhere)."""
    return pixels.to(dtype) / 255


# ---- pretraining --------------------------------------------------------------------------------
def prompt_features(model, classnames):
    """Raw text features of the demo's prompts "a photo of a {class}." (tokenised to 77)."""
    import clip

    with torch.no_grad():
        return model.encode_text(clip.tokenize([f"a photo of a {c}." for c in classnames]))


def quantize_(tensors, bits):
    """Round in place to multiples of 2^-bits (exact float64 operations): the build's state grid.

    Adding 0.0 turns -0.0 into +0.0: a weight whose gradient is zero in theory (a key bias) gets
    noise-sized updates of either sign, which round to a zero of either sign.
    """
    with torch.no_grad():
        for t in tensors:
            t.mul_(2.0 ** bits).round_().div_(2.0 ** bits).add_(0.0)


def pretrain(recipe, log_every=200, threads=1):
    """Train a MicroCLIP from scratch as `recipe` says; returns the float64 model.

    `threads` torch threads (1: the demo's other core stays free; the bytes do not depend on it),
    deterministic algorithms and float64 during the build, whatever the caller set (restored
    afterwards); see the module docstring for why that gives the same bytes everywhere.
    """
    import clip

    caller_threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    dtype = torch.get_default_dtype()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float64)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(recipe.seed)
            return _pretrain(recipe, clip, log_every)
    finally:
        torch.set_default_dtype(dtype)
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(caller_threads)


def _pretrain(recipe, clip, log_every):
    pixels, labels, classnames = load_train_images()
    bright = brightness_of(pixels)
    captions = caption_table(classnames)
    tokens = clip.tokenize([text for text, _, _ in captions])
    tokens = tokens[:, : int((tokens > 0).sum(1).max())].contiguous()  # causal: the 77-token path gives the same
    end = tokens.argmax(dim=-1)
    # Only the captions' tokens are trained (AdamW leaves rows without gradient exactly as they are):
    # a table of those rows instead of 49408, written back at the end.
    used = torch.unique(tokens)
    compact = torch.searchsorted(used, tokens)

    model = MicroCLIP(recipe)  # float64: the default dtype here
    model.visual.conv1.weight.requires_grad_(False)  # made from `grid` at the end
    model.token_embedding.weight.requires_grad_(False)
    grid = nn.Parameter(torch.randn(recipe.vision_width, recipe.patch_grid, recipe.patch_grid) / recipe.patch_grid)
    words = nn.Parameter(model.token_embedding.weight[used].clone())
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad] + [("grid", grid), ("words.embedding", words)]
    trained = [p for _, p in named]
    quantize_([p for p in model.parameters()] + trained, recipe.state_bits)

    decay = [p for n, p in named if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in named if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr, foreach=False)
    warmup = max(1, recipe.steps // 20)

    def lr_at(step):
        if step < warmup:
            return recipe.lr * (step + 1) / warmup
        return 0.5 * recipe.lr * (1 + math.cos(math.pi * (step - warmup) / max(1, recipe.steps - warmup)))

    block_resize = block_resize_matrix(recipe)
    generator = torch.Generator().manual_seed(recipe.seed)
    start = time.time()
    for step in range(recipe.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        index = torch.randint(len(pixels), (recipe.batch_size,), generator=generator)
        caption = sample_captions(labels[index], bright[index], recipe, generator)
        unique, inverse = torch.unique(caption, return_inverse=True)
        views = random_resized_crops(to_unit(pixels[index], torch.float64), recipe, generator)
        image_features = model.visual.from_patches(patch_embeddings(grid, views, block_resize, recipe))
        text_features = model.text_from_embeddings(F.embedding(compact[unique], words), end[unique])[inverse]
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        logits = model.logit_scale.exp() * image_features @ text_features.t()
        # Every caption identical to an image's own is a positive of it (soft targets both ways).
        positive = (caption[:, None] == caption[None, :]).double()
        target = positive / positive.sum(1, keepdim=True)
        loss = 0.5 * (torch.sum(-target * logits.log_softmax(1), 1).mean()
                      + torch.sum(-target * logits.t().log_softmax(1), 1).mean())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))  # CLIP's cap
        quantize_(trained, recipe.state_bits)
        if log_every and (step + 1) % log_every == 0:
            logger.info("micro-CLIP step %d/%d loss %.3f (%.0f s)", step + 1, recipe.steps, loss.item(), time.time() - start)

    with torch.no_grad():
        logger.info("micro-CLIP learned logit scale %.1f; the file gets %.0f", model.logit_scale.exp().item(), recipe.logit_scale)
        model.logit_scale.fill_(math.log(recipe.logit_scale))
        model.token_embedding.weight[used] = words
        model.visual.conv1.weight.copy_(conv1_from_grid(grid, recipe))
        # Scale prompt features to the chosen norm (directions, hence cosines, unchanged).
        norm = prompt_features(model, classnames).norm(dim=-1).mean()
        model.text_projection.mul_(recipe.text_feature_norm / norm)
        quantize_([model.text_projection], recipe.state_bits)
    return model.eval()


def openai_state_dict(model):
    """The model's weights as OpenAI ships them: fp16 tensors under OpenAI's keys.

    float64 -> float32 -> float16, each a correctly rounded cast (grid values are exact in float32);
    + 0.0 makes every zero +0.0.
    """
    return {k: (v.detach().float() + 0.0).half() for k, v in model.state_dict().items()}


def serialization_id(recipe):
    """The 40-digit id torch.save records in `.data/serialization_id`, here derived from the recipe.

    torch.save draws a fresh one per save, so two saves of the same tensors differ in those bytes.
    """
    return str(int(hashlib.sha256(recipe.digest().encode()).hexdigest(), 16) % 10 ** 40).zfill(40)


def checkpoint_bytes(state, recipe):
    """torch.save's bytes for `state`, with the per-save random id replaced by the recipe's.

    The record is stored uncompressed and keeps its length, so only its bytes and its CRC-32 (in
    its local header or data descriptor, and in the central directory) change; every offset stays valid.
    """
    import io
    import struct
    import zipfile
    import zlib

    raw = io.BytesIO()
    torch.save(state, raw)
    blob = bytearray(raw.getvalue())
    archive = zipfile.ZipFile(io.BytesIO(bytes(blob)))
    info = next((i for i in archive.infolist() if i.filename.endswith("/.data/serialization_id")), None)
    if info is None:
        return bytes(blob)
    old, new = archive.read(info), serialization_id(recipe).encode()
    if info.compress_type != zipfile.ZIP_STORED or len(old) != len(new):
        raise RuntimeError(f"torch.save's {info.filename} is not a stored {len(new)}-byte record here: "
                           "scripts/micro_clip.py's checkpoint_bytes needs updating for this torch version")
    name_len, extra_len = struct.unpack_from("<HH", blob, info.header_offset + 26)
    start = info.header_offset + 30 + name_len + extra_len
    if bytes(blob[start:start + len(old)]) != old:
        raise RuntimeError(f"could not locate {info.filename} in torch.save's output")
    blob[start:start + len(new)] = new
    crc = zlib.crc32(new)
    if info.flag_bits & 0x08:  # the CRC is in a data descriptor after the data (torch's writer does this)
        after = start + len(new)
        struct.pack_into("<I", blob, after + (4 if blob[after:after + 4] == b"PK\x07\x08" else 0), crc)
    else:
        struct.pack_into("<I", blob, info.header_offset + 14, crc)
    name = info.filename.encode()
    entry = blob.find(b"PK\x01\x02", archive.start_dir)
    while entry >= 0 and bytes(blob[entry + 46:entry + 46 + len(name)]) != name:
        entry = blob.find(b"PK\x01\x02", entry + 4)
    if entry < 0:
        raise RuntimeError(f"no central directory entry for {info.filename} in torch.save's output")
    struct.pack_into("<I", blob, entry + 16, crc)
    return bytes(blob)


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build(path, recipe=Recipe(), threads=1):
    """Pretrain and write the checkpoint to `path` atomically, with `path`.json metadata."""
    start = time.time()
    logger.info("Building the micro-CLIP (recipe %s: %d steps, seed %d): a few minutes, once",
                recipe.digest(), recipe.steps, recipe.seed)
    model = pretrain(recipe, threads=threads)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    blob = checkpoint_bytes(openai_state_dict(model), recipe)
    _atomic_write(path, lambda f: f.write(blob))
    meta = {"recipe": dataclasses.asdict(recipe), "recipe_hash": recipe.digest(), "sha256": file_sha256(path),
            "build_seconds": round(time.time() - start, 1)}
    # The metadata goes last: a file without matching metadata is never trusted.
    _atomic_write(metadata_path(path), lambda f: f.write(json.dumps(meta, indent=1).encode()))
    logger.info("micro-CLIP written to %s in %.0f s (recipe %s, sha256 %s)", path, time.time() - start,
                meta["recipe_hash"], meta["sha256"])
    return path


def _atomic_write(path, write):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".micro-clip.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def metadata_path(path):
    return path + ".json"


def metadata(path):
    """The metadata beside a built file (recipe, recipe_hash, sha256, build_seconds)."""
    with open(metadata_path(path)) as f:
        return json.load(f)


def recipe_hash(path):
    """The recipe hash in the metadata beside a built file."""
    return metadata(path)["recipe_hash"]


def is_current(path, recipe):
    """True when `path` exists, its metadata names this recipe's hash, and its bytes are the ones built."""
    try:
        meta = metadata(path)
        if not os.path.isfile(path) or meta.get("recipe_hash") != recipe.digest():
            return False
        if meta.get("sha256") != file_sha256(path):
            logger.warning("%s does not match the sha256 recorded when it was built (changed or damaged): rebuilding it", path)
            return False
        return True
    except (OSError, ValueError):
        return False


def ensure_micro_clip(cache_dir, recipe=Recipe()):
    """Path of the micro-CLIP for `recipe` in `cache_dir`; built there first when missing or stale."""
    path = os.path.join(os.path.abspath(os.path.expanduser(cache_dir)), FILE_NAME)
    if is_current(path, recipe):
        return path
    if os.path.exists(path):
        logger.info("%s was built by another recipe or code version, or changed since: rebuilding it", path)
    return build(path, recipe)


# ---- a quick check without the project pipeline -------------------------------------------------
def load_micro_clip(path, recipe=Recipe()):
    """A built file as a float32 MicroCLIP (for the cheap path)."""
    model = MicroCLIP(recipe)
    model.load_state_dict({k: v.float() for k, v in torch.load(path, weights_only=True).items()})
    return model.eval()


def evaluate(path, recipe=Recipe()):
    """Zero-shot accuracy (%) of a built file on t10k through the cheap image path, and its prompt norm."""
    from datasets.fashion_mnist import CLASSNAMES

    model = load_micro_clip(path, recipe)
    pixels, labels = load_test_images()
    with torch.no_grad():
        text = prompt_features(model, CLASSNAMES)
        feats = torch.cat([encode_small_images(model, to_unit(pixels[i:i + 1000]), recipe)
                           for i in range(0, len(pixels), 1000)])
        pred = (feats / feats.norm(dim=-1, keepdim=True) @ (text / text.norm(dim=-1, keepdim=True)).t()).argmax(1)
    return 100.0 * (pred == labels).float().mean().item(), text.norm(dim=-1).mean().item()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="where to write the OpenAI-format .pt file (its metadata goes beside it)")
    parser.add_argument("--steps", type=int, default=Recipe.steps)
    parser.add_argument("--seed", type=int, default=Recipe.seed)
    parser.add_argument("--batch-size", type=int, default=Recipe.batch_size)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the build (the file does not depend on them)")
    parser.add_argument("--evaluate", action="store_true", help="print zero-shot accuracy on t10k afterwards")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    recipe = dataclasses.replace(Recipe(), steps=args.steps, seed=args.seed, batch_size=args.batch_size)
    build(args.output, recipe, threads=args.threads)
    meta = metadata(args.output)
    print(f"recipe {meta['recipe_hash']}  sha256 {meta['sha256']}  ({meta['build_seconds']} s)")
    if args.evaluate:
        acc, norm = evaluate(args.output, recipe)
        print(f"zero-shot on t10k: {acc:.1f} %  (prompt feature norm {norm:.2f})")


if __name__ == "__main__":
    main()
