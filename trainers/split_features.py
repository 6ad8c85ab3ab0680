"""Whole-split features from the feature cache, for methods that fit on all of a split at once
(linear probe, Tip-Adapter's cache keys) instead of iterating a loader.

Bundles are keyed exactly as ``FrozenCLIPTrainer.use_feature_cache`` keys them, so the train
views Tip-Adapter averages are the very views the training loader replays, and the test/val
features are shared with every other run. With ``FEATURE_CACHE.ENABLED False`` the features
are computed and not stored.
"""
from engine.data.transforms import transform_signature
from engine.features import FeatureStore

from .clip_trainer import weights_identity


def split_features(trainer, items, split, is_train, views=None):
    """Raw encoder features [len(views), N, D] (train views) or [N, D] (test transform) of ``items``."""
    cfg = trainer.cfg
    test = trainer.dm.dataset.test
    if split == "val" and test and [d.impath for d in items] == [d.impath for d in test]:
        split = "test"  # ImageNet's val is its test set: one bundle, as the loaders share one
    store = trainer.feature_store or FeatureStore(cfg.FEATURE_CACHE.DIR or None, enabled=cfg.FEATURE_CACHE.ENABLED)
    encoder_key = "|".join([cfg.MODEL.BACKBONE.NAME, weights_identity(cfg), str(trainer.dtype), trainer.prec])
    tfm = trainer.dm.tfm_train if is_train else trainer.dm.tfm_test
    feats = store.features(
        trainer.encode_images, items, tfm, encoder_key, transform_signature(cfg, is_train),
        f"{cfg.DATASET.NAME}/{split}", list(views) if is_train else ["test"],
        batch_size=cfg.FEATURE_CACHE.ENCODE_BATCH_SIZE, num_workers=cfg.DATALOADER.NUM_WORKERS,
        device=trainer.device, is_train=is_train, dtype=trainer.dtype)
    return feats if is_train else feats[0]
