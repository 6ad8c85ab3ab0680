"""Whole-split features from the run's feature source, for methods that fit on all of a split at
once (linear probe, Tip-Adapter's cache keys) instead of iterating a loader.

They go through ``trainer.feature_source`` (engine.features.FeatureSource), so the train views
Tip-Adapter averages are the very views the training loader replays (same seed, same relative
paths, same bundles), and the test/val features are shared with every other run. With
``FEATURE_CACHE.ENABLED False`` the features are computed and not stored.
"""
from engine.features import TEST_VIEW


def split_features(trainer, items, split, is_train, views=None):
    """Raw encoder features [len(views), N, D] (train views) or [N, D] (test transform) of ``items``."""
    test = trainer.dm.dataset.test
    if split == "val" and test and [d.impath for d in items] == [d.impath for d in test]:
        split = "test"  # ImageNet's val is its test set: one bundle, as the loaders share one
    feats = trainer.feature_source.features(split, list(views) if is_train else [TEST_VIEW], items=items)
    return feats if is_train else feats[0]
