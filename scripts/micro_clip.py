"""A micro-CLIP pretrained here, contrastively, on Fashion-MNIST's train images: the demo's model
when no real CLIP weights are cached.

    python scripts/micro_clip.py OUT.pt [--steps N] [--seed S] [--evaluate]
    ensure_micro_clip(cache_dir) -> path     (built on first use, then read from the cache)

The file is an OpenAI-format CLIP state dict (ViT 224 px / patch 32, 2 layers x 64 wide; text
1 layer x 64, context 77, vocabulary 49408; embedding 64; fp16, ~7 MB), so `clip.load(path)`
builds it like real weights. Pretraining sees only the official train split; the demo tests on
t10k.

Two tricks make it take minutes on one CPU thread:
- The test pipeline (bicubic resize 28 -> 224 px, normalisation, the 32 px patch conv) is linear
  in the 28 px image, so the patch embeddings are one matrix product with a kernel derived from
  the conv weight each step; the trained conv then applies unchanged at 224 px (PIL's rounding
  to uint8 is the only difference: cosine > 0.999).
- The text tower is causal and reads the end-of-text token, so training on captions cut to
  their longest length computes exactly what the 77-token path computes.

Transfer is made real but imperfect by the captions (not the images): some classes are often
named as a look-alike (shirts as "T-shirt or top", sneakers and ankle boots swapped), captions
carry brightness words the class prompts lack, and every caption in a batch that is identical to
an image's caption counts as its positive. The text projection is finally rescaled so class
prompt features have a fixed norm (TEXT_FEATURE_NORM, why: see there); cosines do not change.
Half the images are seen as random resized crops, as the few-shot trainers' training views are.
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
BUILD_VERSION = 2

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
    vision_width: int = 64            # heads = width // 64, as OpenAI's builder infers
    vision_layers: int = 2
    text_width: int = 64
    text_layers: int = 1
    embed_dim: int = 64
    # P(a class is named as its look-alike in a caption): (class, look-alike, probability).
    misnaming: tuple = ((6, 0, 0.5), (7, 9, 0.35), (9, 7, 0.35), (2, 4, 0.25))
    text_feature_norm: float = 3.0    # norm of "a photo of a {class}." features after rescaling
    # Share of images seen as a random resized crop (+ flip) with these area bounds, as the few-shot
    # trainers' views are (random_resized_crop, scale 0.08-1): their features must stay meaningful.
    crop_p: float = 0.5
    crop_scale: tuple = (0.08, 1.0)
    version: int = BUILD_VERSION

    def digest(self):
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# Real CLIP's prompt features are not unit vectors: TaskRes adds its residual (trained by Adam,
# whose steps are about LR per coordinate) to these raw features, so their per-coordinate size
# sets how far a few epochs move the classifier. With norm ~15 over 64 coordinates the residual
# barely moved it (MEASURED.md); measured on this model (3 seeds, same file rescaled): norm 1.5 left
# TaskRes at zero-shot at 1 and 4 shots (61.0 / 61.2 vs 61.3 %), 3.0 put it above at 1/4/16 shots
# (62.8 / 62.6 / 63.7). 3.0 / sqrt(64) ~ 0.375 per coordinate is a feature of norm ~12 over
# RN50's 1024 coordinates (real RN50's norm was not measured here: no weights on this machine).
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
        length = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:length]
        causal = torch.full((length, length), float("-inf")).triu_(1)
        x = self.transformer(x.permute(1, 0, 2), causal).permute(1, 0, 2)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ self.text_projection


# ---- the cheap image path: 28 px image -> the patch embeddings of its 224 px version -----------
def resize_matrix(src=SOURCE_SIZE, dst=224):
    """[dst, src] matrix of PIL's bicubic resize along one axis (PIL resizes separably)."""
    from PIL import Image

    cols = []
    for j in range(src):
        row = np.zeros((1, src), dtype=np.float32)
        row[0, j] = 1.0
        out = Image.fromarray(row, mode="F").resize((dst, 1), Image.BICUBIC)
        cols.append(np.asarray(out, dtype=np.float32)[0])
    return torch.from_numpy(np.stack(cols, axis=1))


def patch_kernel(conv_weight, resize, patch):
    """Kernel K [width*grid*grid, 28*28] and bias so that K @ x - bias = conv1(normalise(resize(x))).

    x is a grey 28 px image in [0, 1]; the 224 px image repeats it in three channels, so each
    channel's weights act through 1/std and the means become a constant per output channel.
    """
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    w_eff = (conv_weight / std).sum(1)                                 # [width, P, P]
    bias = (conv_weight * mean / std).sum((1, 2, 3))                   # [width]
    blocks = resize.view(-1, patch, resize.shape[1])                   # [grid, P, 28]
    left = torch.einsum("iua,ouv->oiav", blocks, w_eff)                # [width, grid, 28, P]
    kernel = torch.einsum("oiav,jvb->oijab", left, blocks)             # [width, grid, grid, 28, 28]
    return kernel.reshape(kernel.shape[0], -1, resize.shape[1] ** 2), bias


def patch_embeddings(model, images, resize, patch):
    """images [N, 28, 28] in [0, 1] -> patch embeddings [N, grid*grid, width], as conv1 at 224 px."""
    kernel, bias = patch_kernel(model.visual.conv1.weight, resize, patch)
    width, patches, pixels = kernel.shape
    out = images.reshape(images.shape[0], pixels) @ kernel.reshape(width * patches, pixels).t()
    return out.view(-1, width, patches).transpose(1, 2) - bias


def encode_small_images(model, images, recipe, resize=None):
    """Image features of 28 px images [N, 28, 28] in [0, 1] through the cheap path."""
    resize = resize_matrix(dst=recipe.image_resolution) if resize is None else resize
    return model.visual.from_patches(patch_embeddings(model, images, resize, recipe.patch_size))


def random_resized_crops(images, recipe, generator):
    """torchvision's RandomResizedCrop + horizontal flip on 28 px images [N, 28, 28], kept at 28 px.

    A crop of the small image resampled to 28 px, then (cheap path) to 224 px, stands for the
    crop the trainers take of the PNG and resize to 224 px. A share 1 - crop_p stays whole.
    """
    n = len(images)
    area = torch.empty(n).uniform_(*recipe.crop_scale, generator=generator)
    log_ratio = torch.empty(n).uniform_(math.log(3 / 4), math.log(4 / 3), generator=generator)
    width = (area * log_ratio.exp()).sqrt().clamp(max=1.0)
    height = (area / log_ratio.exp()).sqrt().clamp(max=1.0)
    cx = (1 - width) * (2 * torch.rand(n, generator=generator) - 1)  # crop centre in [-1, 1] coordinates
    cy = (1 - height) * (2 * torch.rand(n, generator=generator) - 1)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    keep = torch.rand(n, generator=generator) >= recipe.crop_p
    width, height, cx, cy, flip = (torch.where(keep, d, v) for v, d in
                                   ((width, 1.0), (height, 1.0), (cx, 0.0), (cy, 0.0), (flip, 1.0)))
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = width * flip, cx, height, cy
    grid = F.affine_grid(theta, (n, 1, SOURCE_SIZE, SOURCE_SIZE), align_corners=False)
    return F.grid_sample(images[:, None], grid, mode="bilinear", padding_mode="border", align_corners=False)[:, 0]


# ---- captions ---------------------------------------------------------------------------------
def caption_table(classnames):
    """All pretraining captions, as (text, class named, brightness index) in a fixed order."""
    return [(template.format(f"{BRIGHTNESS[b]} {name}"), c, b)
            for c, name in enumerate(classnames) for b in range(len(BRIGHTNESS))
            for template in CAPTION_TEMPLATES]


def brightness_of(images):
    """0 (dark) / 1 (bright) per image: its mean ink intensity against the train median."""
    ink = images.flatten(1).sum(1) / (images.flatten(1) > 0.1).sum(1).clamp(min=1)
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
def load_train_images():
    """Fashion-MNIST's official train split: images [60000, 28, 28] in [0, 1], labels, class names."""
    from datasets.fashion_mnist import CLASSNAMES, DEBIAN_DIR, FILES, _find, find_source_dir, read_idx

    folder = find_source_dir(DEBIAN_DIR)
    images = read_idx(_find(folder, FILES["train"][0]), 2051)
    labels = read_idx(_find(folder, FILES["train"][1]), 2049)
    return torch.from_numpy(images.astype(np.float32) / 255.0), torch.from_numpy(labels.astype(np.int64)), CLASSNAMES


def load_test_images():
    from datasets.fashion_mnist import DEBIAN_DIR, FILES, _find, find_source_dir, read_idx

    folder = find_source_dir(DEBIAN_DIR)
    images = read_idx(_find(folder, FILES["test"][0]), 2051)
    labels = read_idx(_find(folder, FILES["test"][1]), 2049)
    return torch.from_numpy(images.astype(np.float32) / 255.0), torch.from_numpy(labels.astype(np.int64))


# ---- pretraining --------------------------------------------------------------------------------
def prompt_features(model, classnames):
    """Raw text features of the demo's prompts "a photo of a {class}." (tokenised to 77)."""
    import clip

    with torch.no_grad():
        return model.encode_text(clip.tokenize([f"a photo of a {c}." for c in classnames]))


def pretrain(recipe, log_every=200):
    """Train a MicroCLIP from scratch as `recipe` says; returns the fp32 model (deterministic)."""
    import clip

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same bytes on every machine, and the demo's other core stays free
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(recipe.seed)
            return _pretrain(recipe, clip, log_every)
    finally:
        torch.set_num_threads(threads)


def _pretrain(recipe, clip, log_every):
    images, labels, classnames = load_train_images()
    bright = brightness_of(images)
    captions = caption_table(classnames)
    tokens = clip.tokenize([text for text, _, _ in captions])
    tokens = tokens[:, : int((tokens > 0).sum(1).max())]  # causal: the 77-token path gives the same
    model = MicroCLIP(recipe)
    resize = resize_matrix(dst=recipe.image_resolution)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr)
    warmup = max(1, recipe.steps // 20)

    def lr_at(step):
        if step < warmup:
            return recipe.lr * (step + 1) / warmup
        return 0.5 * recipe.lr * (1 + math.cos(math.pi * (step - warmup) / max(1, recipe.steps - warmup)))

    generator = torch.Generator().manual_seed(recipe.seed)
    start = time.time()
    for step in range(recipe.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        index = torch.randint(len(images), (recipe.batch_size,), generator=generator)
        caption = sample_captions(labels[index], bright[index], recipe, generator)
        unique, inverse = torch.unique(caption, return_inverse=True)
        image_features = encode_small_images(model, random_resized_crops(images[index], recipe, generator), recipe, resize)
        text_features = model.encode_text(tokens[unique])[inverse]
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        logits = model.logit_scale.exp() * image_features @ text_features.t()
        # Every caption identical to an image's own is a positive of it (soft targets both ways).
        positive = (caption[:, None] == caption[None, :]).float()
        target = positive / positive.sum(1, keepdim=True)
        loss = 0.5 * (torch.sum(-target * logits.log_softmax(1), 1).mean()
                      + torch.sum(-target * logits.t().log_softmax(1), 1).mean())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))  # CLIP's cap
        if log_every and (step + 1) % log_every == 0:
            logger.info("micro-CLIP step %d/%d loss %.3f (%.0f s)", step + 1, recipe.steps, loss.item(), time.time() - start)

    # Scale prompt features to the chosen norm (directions, hence cosines, unchanged).
    with torch.no_grad():
        norm = prompt_features(model, classnames).norm(dim=-1).mean()
        model.text_projection.mul_(recipe.text_feature_norm / norm)
    return model.eval()


def openai_state_dict(model):
    """The model's weights as OpenAI ships them: fp16 tensors under OpenAI's keys."""
    return {k: v.detach().clone().half() for k, v in model.state_dict().items()}


def build(path, recipe=Recipe()):
    """Pretrain and write the checkpoint to `path` atomically, with `path`.json metadata."""
    start = time.time()
    logger.info("Building the micro-CLIP (%d steps, seed %d): a few minutes, once", recipe.steps, recipe.seed)
    model = pretrain(recipe)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    meta = {"recipe": dataclasses.asdict(recipe), "recipe_hash": recipe.digest(),
            "build_seconds": round(time.time() - start, 1)}
    _atomic_write(path, lambda f: torch.save(openai_state_dict(model), f))
    # The metadata goes last: a file without matching metadata is never trusted.
    _atomic_write(metadata_path(path), lambda f: f.write(json.dumps(meta, indent=1).encode()))
    logger.info("micro-CLIP written to %s in %.0f s", path, time.time() - start)
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


def recipe_hash(path):
    """The recipe hash in the metadata beside a built file."""
    with open(metadata_path(path)) as f:
        return json.load(f)["recipe_hash"]


def is_current(path, recipe):
    """True when `path` exists and its metadata names this recipe's hash."""
    try:
        with open(metadata_path(path)) as f:
            return os.path.isfile(path) and json.load(f).get("recipe_hash") == recipe.digest()
    except (OSError, ValueError):
        return False


def ensure_micro_clip(cache_dir, recipe=Recipe()):
    """Path of the micro-CLIP for `recipe` in `cache_dir`; built there first when missing or stale."""
    path = os.path.join(os.path.abspath(os.path.expanduser(cache_dir)), FILE_NAME)
    if is_current(path, recipe):
        return path
    if os.path.exists(path):
        logger.info("%s was built by another recipe or code version: rebuilding it", path)
    return build(path, recipe)


# ---- a quick check without the project pipeline -------------------------------------------------
def evaluate(path, recipe=Recipe()):
    """Zero-shot accuracy (%) of a built file on t10k, through the cheap image path."""
    from datasets.fashion_mnist import CLASSNAMES

    model = MicroCLIP(recipe)
    model.load_state_dict({k: v.float() for k, v in torch.load(path, weights_only=True).items()})
    model.eval()
    images, labels = load_test_images()
    with torch.no_grad():
        text = prompt_features(model, CLASSNAMES)
        feats = torch.cat([encode_small_images(model, images[i:i + 1000], recipe) for i in range(0, len(images), 1000)])
        pred = (feats / feats.norm(dim=-1, keepdim=True) @ (text / text.norm(dim=-1, keepdim=True)).t()).argmax(1)
    return 100.0 * (pred == labels).float().mean().item(), text.norm(dim=-1).mean().item()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="where to write the OpenAI-format .pt file (its metadata goes beside it)")
    parser.add_argument("--steps", type=int, default=Recipe.steps)
    parser.add_argument("--seed", type=int, default=Recipe.seed)
    parser.add_argument("--evaluate", action="store_true", help="print zero-shot accuracy on t10k afterwards")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    recipe = dataclasses.replace(Recipe(), steps=args.steps, seed=args.seed)
    build(args.output, recipe)
    if args.evaluate:
        acc, norm = evaluate(args.output, recipe)
        print(f"zero-shot on t10k: {acc:.1f} %  (prompt feature norm {norm:.2f})")


if __name__ == "__main__":
    main()
