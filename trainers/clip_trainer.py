"""`FrozenCLIPTrainer`: the base of every method whose CLIP image encoder stays frozen.

It owns what such methods share: loading CLIP (name, weights file, cache dir or an untrained
backbone) in the trainer's precision, the feature source (``engine.features.FeatureSource``:
cached image features and the loaders that replay training on them), registering the trained
modules, and the two pieces of math every CLIP head repeats: ``cosine_logits`` and
``encode_if_images`` (a batch holds images in end-to-end mode, features otherwise).
The class docstring shows how a method is added.
"""
import logging
import os
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.transforms import Normalize, Resize

import clip
from engine import TrainerX
from engine.data.transforms import build_transform, interpolation_name, model_input_settings
from engine.errors import ConfigError
from engine.features import FeatureSource, file_identity
from engine.metrics import compute_accuracy
from engine.optim import build_lr_scheduler, build_optimizer
from engine.protocol import backbone_tag  # noqa: F401 - trainers import it from here

logger = logging.getLogger(__name__)

PRECISIONS = ("fp16", "fp32", "amp")
# What computes the features besides the weights: bump it when the encoder's code changes its
# outputs, so cached features of the old code are never reused (v1: clip/model.py, OpenAI's
# architecture with fp32 LayerNorms under fp16, replacing open_clip's model).
ENCODER_IMPLEMENTATION = "clip.model-v1"
_TORCH_DEFAULT_THREADS = torch.get_num_threads()  # what FEATURE_CACHE.NUM_THREADS 0 restores
# OpenAI CLIP's input normalisation (its preprocess), for models that come without a preprocess
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def weights_identity(cfg):
    """What identifies the encoder's weights, for feature-cache keys."""
    name = cfg.MODEL.BACKBONE.NAME
    if not cfg.MODEL.BACKBONE.PRETRAINED:
        return f"untrained:{name}:seed0:openai-arch"  # OpenAI's classes since issue 9 (was open_clip's)
    path = clip.local_weights_path(name, cfg.MODEL.BACKBONE.CACHE_DIR or None, cfg.MODEL.BACKBONE.WEIGHTS or None)
    return file_identity(path) if path else f"open_clip:{name}"  # open_clip tags: its own cache


def cosine_logits(image_features, text_features, logit_scale):
    """CLIP's logits: exp(logit_scale) * normalize(image) @ normalize(text)^T, in the text's dtype."""
    image = image_features / image_features.norm(dim=-1, keepdim=True)
    text = text_features / text_features.norm(dim=-1, keepdim=True)
    return logit_scale.exp() * image.to(text.dtype) @ text.t()


def encode_if_images(encode, inputs):
    """Image features of a batch: ``inputs`` as they are when they are features [B, D], else ``encode(inputs)``."""
    return inputs if inputs.dim() == 2 else encode(inputs)


class ClassTextOncePerTest:
    """Mixin for trainers whose model is ``model(inputs, text_features)`` with trainable text features
    (CoOp, PromptSRC, CLIP-LoRA): nothing changes during a test, so the classes are encoded once per
    ``test()`` instead of once per batch. Put it before the trainer base class."""

    _eval_text = None

    @torch.no_grad()
    def test(self, split=None):
        self._eval_text = None
        try:
            return super().test(split)
        finally:
            self._eval_text = None

    def model_inference(self, inputs):
        if self._eval_text is None:
            self._eval_text = self.model.text_features()
        return self.model(inputs, self._eval_text)


class CosineClassifier(nn.Module):
    """A fixed text classifier: ``forward(image_features)`` = cosine_logits with CLIP's scale."""

    def __init__(self, text_features, logit_scale):
        super().__init__()
        self.register_buffer("text_features", text_features)
        self.register_buffer("logit_scale", logit_scale.detach().clone())

    def forward(self, image_features):
        return cosine_logits(image_features, self.text_features, self.logit_scale)


def build_untrained_clip(name, device):
    """The architecture of ``name`` with seeded random weights (the demo without weights).

    The same class as ``clip.load`` returns (OpenAI's architecture), the same weights every time.
    """
    return clip.untrained_model(name, seed=0).to(device)


class FrozenCLIPTrainer(TrainerX):
    """A TrainerX whose image encoder is frozen CLIP; trains and tests on cached features.

    ``build_model`` is a fixed sequence; a method fills in the head and the step::

        load_clip()                     # CLIP in PREC (fp16 -> fp32 on CPU), frozen, eval
        configure_input()               # INPUT size/interpolation/mean/std from the model unless set
        build_feature_source()          # self.feature_source: features(split, views), loaders
        self.model = build_head(clip)   # the method's nn.Module: image features [B, D] -> logits
        register_trainable()            # trainable_modules(): optimiser + LR schedule from OPTIM
        swap_loaders()                  # image loaders -> feature loaders (FEATURE_CACHE.ENABLED)

    Adding a method that trains on cached features (the whole method, ~20 lines; it also trains end
    to end with FEATURE_CACHE.ENABLED False, since the default ``forward_backward`` encodes images
    before the head)::

        class TunedRows(nn.Module):  # the head: zero-shot classifier rows, tuned
            def __init__(self, text_features, logit_scale):
                super().__init__()
                self.weight = nn.Parameter(text_features.float().clone())
                self.register_buffer("logit_scale", logit_scale.detach().clone())

            def forward(self, image_features):
                return cosine_logits(image_features.float(), self.weight, self.logit_scale)

        @TRAINER_REGISTRY.register()
        class RowTuning(FrozenCLIPTrainer):
            def build_head(self, clip_model):
                text = prompt_features(clip_model, self.dm.dataset.classnames, ["a photo of a {}."])[0]
                return TunedRows(text, clip_model.logit_scale)

            def trainable_modules(self):
                return {"head": self.model}       # checkpoints in <OUTPUT_DIR>/head/

    with its config group (``TRAINER.RowTuning.PREC``) added by a module-level ``extend_cfg(cfg)``. The step,
    evaluation, checkpoints, resume and the cache come from the base: ``forward_backward`` is cross-entropy
    on ``self.model(self.image_features(inputs))`` (override it for another loss), the forward that
    ``model_inference`` runs too. Other features a method needs (Tip-Adapter's cache keys, a linear probe's training set) come from ``self.feature_source.features(split,
    views)``. A method that trains nothing sets ``training_free = True`` (no training views are
    encoded) and overrides ``train``.
    """


    def __init__(self, cfg):
        self.set_threads(cfg.FEATURE_CACHE.NUM_THREADS)
        super().__init__(cfg)

    @staticmethod
    def set_threads(num_threads):
        """torch's CPU thread count for this process, from FEATURE_CACHE.NUM_THREADS (0: torch's default)."""
        if num_threads < 0:
            raise ConfigError(f"FEATURE_CACHE.NUM_THREADS must be 0 (torch's default) or a positive count, got {num_threads}.")
        torch.set_num_threads(num_threads or _TORCH_DEFAULT_THREADS)
        logger.info("torch CPU threads: %d (FEATURE_CACHE.NUM_THREADS %d; %d cores)",
                    torch.get_num_threads(), num_threads, os.cpu_count() or 1)

    def base_check_cfg(self, cfg):
        """Found before data or CLIP load, for every frozen-CLIP trainer whatever its ``check_cfg``
        does (see ``SimpleTrainer.run_config_checks``): a missing backbone, a PREC typo."""
        if not cfg.MODEL.BACKBONE.NAME:
            raise ConfigError("No CLIP backbone given: pass --backbone (RN50, ViT-B/16, ... or a weights file) "
                              "or set MODEL.BACKBONE.NAME in the config file.")
        group = self.trainer_cfg()
        prec = group.get("PREC", "fp16")
        if prec not in PRECISIONS:
            name = next((k for k, v in cfg.TRAINER.items() if v is group), cfg.TRAINER.NAME)  # e.g. CLIP_ADAPTER
            raise ConfigError(f"TRAINER.{name}.PREC must be one of {', '.join(PRECISIONS)}, got {prec!r}.")

    def precision(self):
        """The PREC of this trainer's config group (fp16 when it has none); fp16 becomes fp32 on CPU."""
        prec = self.trainer_cfg().get("PREC", "fp16")
        if prec == "fp16" and self.device.type != "cuda":
            warnings.warn("PREC fp16 needs a GPU; running in fp32 on the CPU", stacklevel=2)
            return "fp32"
        return prec

    # ---- the fixed build sequence -----------------------------------------------------------
    def build_model(self):
        clip_model = self.load_clip()
        self.configure_input()
        self.feature_source = self.build_feature_source()
        self.model = self.build_head(clip_model).to(self.device)
        self.register_trainable()
        self.swap_loaders()

    def build_head(self, clip_model):
        """The method's model: ``forward(image_features [B, D]) -> logits [B, K]``."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_head(clip_model)")

    def trainable_modules(self):
        """``{name: module}`` trained with OPTIM and saved under ``<OUTPUT_DIR>/<name>/``; none by default."""
        return {}

    def load_clip(self):
        """Load CLIP as the config says, frozen, in this trainer's precision; sets ``self.clip_model``."""
        cfg = self.cfg
        name = cfg.MODEL.BACKBONE.NAME
        logger.info("Loading CLIP (backbone: %s)", name)
        if cfg.MODEL.BACKBONE.PRETRAINED:
            # Loaded on the CPU (fp32, stored precision), moved below: clip.load on a GPU would
            # round the matrices to fp16 as OpenAI's does, and PREC decides this trainer's dtype.
            model, self.preprocess = clip.load(name, device="cpu", cache_dir=cfg.MODEL.BACKBONE.CACHE_DIR or None,
                                               weights=cfg.MODEL.BACKBONE.WEIGHTS or None)
            model = model.to(self.device)
        else:
            logger.warning("MODEL.BACKBONE.PRETRAINED is False: %s has random weights (untrained backbone)", name)
            model = build_untrained_clip(name, self.device)
            self.preprocess = None  # OpenAI's pipeline: bicubic, CLIP's mean/std
        self.prec = self.precision()
        model.float()
        if self.prec == "fp16":  # as OpenAI's build_model: matrices fp16, norms and embeddings fp32
            clip.model.convert_weights(model) if isinstance(model, clip.model.CLIP) else model.half()
        model.requires_grad_(False)
        if self.device.type == "cuda":  # NHWC convolutions run on the tensor cores without layout copies
            model.visual.to(memory_format=torch.channels_last)
        self.clip_model = model
        # OpenAI's CLIP.dtype (conv1's): what CoOp-family code casts images and prompts to
        self.dtype = getattr(model, "dtype", None) or next(model.visual.parameters()).dtype
        return model

    def model_input(self):
        """(size, interpolation, mean, std) the loaded CLIP expects, read from its preprocess."""
        visual = self.clip_model.visual
        size = getattr(visual, "input_resolution", None) or self.clip_model.image_resolution
        interpolation, mean, std = "bicubic", OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
        for step in getattr(self.preprocess, "transforms", []):
            if isinstance(step, Resize):
                interpolation = interpolation_name(step.interpolation) or interpolation
            elif isinstance(step, Normalize):
                mean, std = tuple(step.mean), tuple(step.std)
        return int(size), interpolation, mean, std

    def configure_input(self):
        """See images as the model expects: INPUT values the user did not set come from the model.

        A value still at Dassl's default takes the model's (so a run without a trainer config
        gets CLIP's bicubic resize and mean/std); a value set on purpose is kept, with a warning
        when it contradicts the model. The config is updated in place, so config.yaml and the
        feature-cache keys record what was used; the transforms are rebuilt when anything changed.
        """
        cfg = self.cfg
        size, interpolation, mean, std = self.model_input()
        updates, sources, conflicts = model_input_settings(cfg.INPUT, size, interpolation, mean, std)
        for sentence in conflicts:
            logger.warning(sentence)
        if updates:
            frozen = cfg.is_frozen()
            cfg.defrost()
            for key, value in updates.items():
                cfg.INPUT[key] = value
            if frozen:
                cfg.freeze()
            self.dm.tfm_train = build_transform(cfg, is_train=True)
            self.dm.tfm_test = build_transform(cfg, is_train=False)
            for loader, tfm in ((self.train_loader_x, self.dm.tfm_train), (self.val_loader, self.dm.tfm_test),
                                (self.test_loader, self.dm.tfm_test)):
                if loader is not None:
                    loader.dataset.transform = tfm
        inp = cfg.INPUT
        logger.info("Input pipeline: %dx%d (%s), %s (%s), mean %s std %s (%s), transforms %s",
                    inp.SIZE[0], inp.SIZE[1], sources["SIZE"], inp.INTERPOLATION, sources["INTERPOLATION"],
                    list(inp.PIXEL_MEAN), list(inp.PIXEL_STD),
                    "model" if sources["PIXEL_MEAN"] == sources["PIXEL_STD"] == "model" else "config",
                    list(inp.TRANSFORMS))

    def build_feature_source(self):
        """This run's FeatureSource, keyed by backbone, weights file, dtype and precision."""
        cfg = self.cfg
        encoder_key = "|".join([cfg.MODEL.BACKBONE.NAME, weights_identity(cfg), str(self.dtype), self.prec,
                                ENCODER_IMPLEMENTATION])
        return FeatureSource.from_config(cfg, self.dm, self.encode_images, encoder_key, self.device, self.dtype,
                                         self.max_epoch, trains=not self.training_free)

    def register_trainable(self):
        """Register each trainable module with its optimiser and LR schedule; freeze the rest of ``self.model``."""
        modules = self.trainable_modules()
        if not modules:
            return
        logger.info("Turning off gradients in both the image and the text encoder")
        trained = {id(p) for module in modules.values() for p in module.parameters()}
        for param in self.model.parameters():
            param.requires_grad_(id(param) in trained)
        for name, module in modules.items():
            optim = build_optimizer(module, self.cfg.OPTIM)
            sched = build_lr_scheduler(optim, self.cfg.OPTIM)
            self.register_model(name, module, optim, sched)
            self.optim, self.sched = optim, sched  # Dassl trainers with one module use these names
        self.scaler = torch.amp.GradScaler(self.device.type) if self.prec == "amp" else None

    def forward_backward(self, batch):
        """Cross-entropy on ``self.model(self.image_features(inputs))`` (TaskRes, CLIP-Adapter, CoOp, CoCoOp,
        and any method that implements only ``build_head``): images are encoded first in end-to-end mode
        (FEATURE_CACHE.ENABLED False), so the head always gets features, as in ``model_inference``.
        The accuracy is reported too (CoCoOp's original reports the loss only; it costs nothing)."""
        inputs, label = self.parse_batch_train(batch)

        def loss_fn():
            output = self.model(self.image_features(inputs))
            return F.cross_entropy(output.float(), label), output

        loss, output = self.step(loss_fn)
        return {"loss": loss.item(), "acc": compute_accuracy(output, label)[0].item()}

    def step(self, loss_fn):
        """One optimisation step of ``loss_fn() -> (loss, output)`` (``optimise``), then Dassl's LR
        convention: the scheduler steps at the epoch's last batch. Returns (loss, output)."""
        loss, output = self.optimise(loss_fn)
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return loss, output

    def optimise(self, loss_fn):
        """The optimiser step of ``loss_fn() -> (loss, output)`` in this trainer's precision (amp:
        autocast + GradScaler), no LR step (a method with its own schedule steps it). Returns (loss, output)."""
        if self.prec == "amp":
            with torch.autocast(self.device.type):
                loss, output = loss_fn()
            self.optim.zero_grad()
            self.detect_anomaly(loss)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optim)
            self.scaler.update()
        else:
            loss, output = loss_fn()
            self.model_backward_and_update(loss)
        return loss, output

    def swap_loaders(self):
        """Replace the image loaders by feature loaders, unless the cache is off (end-to-end mode)."""
        if self.feature_source.store is None:
            return
        self.train_loader_x, self.val_loader, self.test_loader = self.feature_source.loaders(
            self.train_loader_x, self.val_loader, self.test_loader)

    def use_feature_cache(self):
        """For subclasses that still write their own ``build_model`` (load_clip(), their head, then
        this as the last step): the input pipeline, the feature source and the loader swap of the
        fixed sequence. New methods implement ``build_head`` instead."""
        self.configure_input()
        self.feature_source = self.build_feature_source()
        self.swap_loaders()

    @property
    def feature_store(self):
        """The FeatureStore in use (None in end-to-end mode): its ``encoded`` count, ``root``."""
        source = getattr(self, "feature_source", None)
        return source.store if source is not None else None

    # ---- images or features -----------------------------------------------------------------
    def encode_images(self, images):
        """Frozen image encoder: images on the device -> features in the encoder's dtype."""
        with torch.autocast(self.device.type, enabled=self.prec == "amp"):
            return self.clip_model.encode_image(images.type(self.dtype))

    def image_features(self, inputs):
        """Features of a batch's inputs: cached features pass through, images are encoded."""
        return encode_if_images(self.encode_images, inputs)

    def model_inference(self, inputs):
        return self.model(self.image_features(inputs))
