"""`FrozenCLIPTrainer`: what every trainer with a frozen CLIP image encoder shares.

- loads CLIP from the config (name, explicit weights, cache dir, or an untrained backbone);
- applies the precision (fp16 falls back to fp32 on CPU, with a warning);
- by default replaces the image loaders with feature loaders over the feature cache
  (``FEATURE_CACHE.ENABLED``), so the encoder runs once per needed view, not once per epoch.

Subclasses build their head in ``build_model`` after ``self.load_clip()``, register it, and
implement ``forward_backward``; their model's ``forward`` must accept images [B, 3, H, W] or
encoder features [B, D].
"""
import logging
import os
import warnings

import torch

import clip
from engine import TrainerX
from engine.data.transforms import transform_signature
from engine.errors import ConfigError
from engine.features import CachedFeatureLoader, FeatureStore, file_identity, format_size

logger = logging.getLogger(__name__)

PRECISIONS = ("fp16", "fp32", "amp")
# open_clip architecture names for OpenAI names, for an untrained backbone (PRETRAINED False)
OPENAI_TO_OPEN_CLIP = {
    "RN50": "RN50", "RN101": "RN101", "RN50x4": "RN50x4", "RN50x16": "RN50x16", "RN50x64": "RN50x64",
    "ViT-B/32": "ViT-B-32", "ViT-B/16": "ViT-B-16", "ViT-L/14": "ViT-L-14", "ViT-L/14@336px": "ViT-L-14-336",
}


def backbone_tag(name):
    """Short backbone name used in folder names: RN50 -> rn50, ViT-B/16 -> vitb16."""
    base = os.path.splitext(os.path.basename(name))[0] if os.path.isfile(name) else name
    return base.lower().replace("/", "").replace("-", "").replace("@", "")


def weights_identity(cfg):
    """What identifies the encoder's weights, for feature-cache keys."""
    name = cfg.MODEL.BACKBONE.NAME
    if not cfg.MODEL.BACKBONE.PRETRAINED:
        return f"untrained:{name}:seed0"
    path = clip.local_weights_path(name, cfg.MODEL.BACKBONE.CACHE_DIR or None, cfg.MODEL.BACKBONE.WEIGHTS or None)
    return file_identity(path) if path else f"open_clip:{name}"  # open_clip tags: its own cache


def build_untrained_clip(name, device):
    """The architecture of ``name`` with seeded random weights (the demo without weights)."""
    import open_clip

    arch = OPENAI_TO_OPEN_CLIP.get(name, name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = open_clip.create_model(arch, pretrained=None)
    model = clip.add_attributes(model)
    return model.to(device).eval()


class FrozenCLIPTrainer(TrainerX):
    """A TrainerX whose image encoder is frozen CLIP; trains and tests on cached features."""

    def check_cfg(self, cfg):
        """Found before data or CLIP load: a missing backbone, a PREC typo."""
        super().check_cfg(cfg)
        if not cfg.MODEL.BACKBONE.NAME:
            raise ConfigError("No CLIP backbone given: pass --backbone (RN50, ViT-B/16, ... or a weights file) "
                              "or set MODEL.BACKBONE.NAME in the config file.")
        prec = self.trainer_cfg().get("PREC", "fp16")
        if prec not in PRECISIONS:
            raise ConfigError(f"TRAINER.{cfg.TRAINER.NAME}.PREC must be one of {', '.join(PRECISIONS)}, got {prec!r}.")

    def precision(self):
        """The PREC of this trainer's config group (fp16 when it has none); fp16 becomes fp32 on CPU."""
        prec = self.trainer_cfg().get("PREC", "fp16")
        if prec == "fp16" and self.device.type != "cuda":
            warnings.warn("PREC fp16 needs a GPU; running in fp32 on the CPU", stacklevel=2)
            return "fp32"
        return prec

    def load_clip(self):
        """Load CLIP as the config says, frozen, in this trainer's precision; sets ``self.clip_model``."""
        cfg = self.cfg
        name = cfg.MODEL.BACKBONE.NAME
        logger.info("Loading CLIP (backbone: %s)", name)
        if cfg.MODEL.BACKBONE.PRETRAINED:
            model, _ = clip.load(name, device=self.device, cache_dir=cfg.MODEL.BACKBONE.CACHE_DIR or None,
                                 weights=cfg.MODEL.BACKBONE.WEIGHTS or None)
        else:
            logger.warning("MODEL.BACKBONE.PRETRAINED is False: %s has random weights (untrained backbone)", name)
            model = build_untrained_clip(name, self.device)
        self.prec = self.precision()
        model.half() if self.prec == "fp16" else model.float()
        model.requires_grad_(False)
        if self.device.type == "cuda":  # NHWC convolutions run on the tensor cores without layout copies
            model.visual.to(memory_format=torch.channels_last)
        self.clip_model = model
        self.dtype = next(model.visual.parameters()).dtype
        return model

    def encode_images(self, images):
        """Frozen image encoder: images on the device -> features in the encoder's dtype."""
        with torch.autocast(self.device.type, enabled=self.prec == "amp"):
            return self.clip_model.encode_image(images.type(self.dtype))

    # ---- the feature cache ------------------------------------------------------------------
    def build_data_loader(self):
        super().build_data_loader()
        self.feature_store = None

    def use_feature_cache(self):
        """Swap the image loaders for feature loaders (called at the end of ``build_model``)."""
        cfg = self.cfg
        if not cfg.FEATURE_CACHE.ENABLED:
            logger.info("Feature cache off: the image encoder runs in the loop (end-to-end mode)")
            return
        self.feature_store = FeatureStore(cfg.FEATURE_CACHE.DIR or None)
        encoder_key = "|".join([cfg.MODEL.BACKBONE.NAME, weights_identity(cfg), str(self.dtype), self.prec])
        group = cfg.DATASET.NAME
        views = cfg.FEATURE_CACHE.TRAIN_VIEWS
        if views < 1:
            raise ConfigError(f"FEATURE_CACHE.TRAIN_VIEWS must be at least 1, got {views}.")
        views = min(views, self.max_epoch)  # more views than epochs would never be used
        logger.info("Feature cache: %s (%d training view(s) per image)", self.feature_store.root, views)

        def loader(items, image_loader, is_train, split):
            if image_loader is None:
                return None
            tfm = self.dm.tfm_train if is_train else self.dm.tfm_test

            def compute():
                feats = self.feature_store.features(
                    self.encode_images, items, tfm, encoder_key, transform_signature(cfg, is_train),
                    f"{group}/{split}", list(range(views)) if is_train else ["test"],
                    batch_size=cfg.FEATURE_CACHE.ENCODE_BATCH_SIZE, num_workers=cfg.DATALOADER.NUM_WORKERS,
                    device=self.device, is_train=is_train, dtype=self.dtype)
                logger.info("Feature cache holds %s in %s", format_size(self.feature_store.size_bytes()),
                            self.feature_store.root)
                return feats

            return CachedFeatureLoader(items, compute, image_loader.sampler, image_loader.batch_size,
                                       image_loader.drop_last, device=self.device)

        ds = self.dm.dataset
        self.train_loader_x = loader(ds.train_x, self.train_loader_x, True, "train")
        self.test_loader = loader(ds.test, self.test_loader, False, "test")
        # ImageNet's val set is its test set: the test loader serves both, read from disk once
        same_as_test = ds.val is not None and [d.impath for d in ds.val] == [d.impath for d in ds.test]
        self.val_loader = self.test_loader if same_as_test else loader(ds.val, self.val_loader, False, "val")
