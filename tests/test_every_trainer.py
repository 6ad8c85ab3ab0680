"""Every registered trainer, in both modes: trained (1 epoch) and evaluated through train.py on
cached features and end to end (FEATURE_CACHE.ENABLED False), on a dataset replica with a tiny CLIP.

Parametrised over TRAINER_REGISTRY, so a trainer added to ``trainers/`` is tested here without
anyone writing its test. A trainer whose image tower changes (no feature cache possible) says so
with ``protocol = Protocol(end_to_end=True)`` (engine/protocol.py) or the class attribute
``end_to_end_only = True``; it is then checked to run end to end in both modes. Also: a method
that implements only ``build_head`` (the documented minimal path) trains in both modes, and every
trainer gets the engine's config checks whatever its own ``check_cfg`` does.
"""
import os

import pytest
import torch.nn as nn
from yacs.config import CfgNode as CN

import trainers  # noqa: F401  (registers the trainers)
from dataset_replicas import build_replica
from engine import TRAINER_REGISTRY
from engine.errors import ConfigError
from helpers import accuracies, run_train, tiny_clip, write_tiny_config
from trainers.clip_trainer import FrozenCLIPTrainer, cosine_logits
from trainers.text_features import prompt_features

REPLICA = "DescribableTextures"  # 4 classes, train/val/test, one of CoOp's datasets (its templates exist)
# options that keep a trainer's run short; a trainer without an entry runs with its defaults
FAST = {
    "TipAdapter": ["TRAINER.TIP_ADAPTER.AUGMENT_EPOCH", 1, "TRAINER.TIP_ADAPTER.SEARCH_STEP", "[4, 2]"],
    "TipAdapterF": ["TRAINER.TIP_ADAPTER.AUGMENT_EPOCH", 1, "TRAINER.TIP_ADAPTER.SEARCH_STEP", "[4, 2]"],
    "LinearProbe": ["TRAINER.LINEAR_PROBE.NUM_STEP", 1, "TRAINER.LINEAR_PROBE.MAX_ITER", 50],
    "MVLPT": ["TRAINER.MVLPT.COOP.N_CTX", 4],  # MCoOp: without a prompt MVLPT is zero-shot CLIP
    "CoOp": ["TRAINER.COOP.N_CTX", 4],
    "CoCoOp": ["TRAINER.COCOOP.N_CTX", 4],
}


def end_to_end_only(cls):
    protocol = getattr(cls, "protocol", None)
    return bool(getattr(cls, "end_to_end_only", False) or getattr(protocol, "end_to_end", False))


def registered_names():
    return sorted(name for name, _ in TRAINER_REGISTRY)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("every_trainer")
    root = build_replica(REPLICA, tmp / "data")
    cfg = write_tiny_config(tmp / "cfg.yaml", tiny_clip(tmp), dataset=REPLICA, epochs=1, batch=4)
    return root, cfg


def run(setup, out, name, cached, *extra):
    root, cfg = setup
    return run_train("--root", root, "--seed", 1, "--trainer", name, "--config-file", cfg, "--output-dir", out,
                     "DATASET.NUM_SHOTS", 2, "FEATURE_CACHE.ENABLED", cached, "FEATURE_CACHE.TRAIN_VIEWS", 1,
                     "OPTIM.WARMUP_EPOCH", -1, "STRONG_BASE.ROOT", os.path.join(str(out), "strong_base"),
                     *FAST.get(name, []), *extra)


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "end_to_end"])
@pytest.mark.parametrize("name", registered_names())
def test_every_registered_trainer_trains_and_evaluates_in_both_modes(setup, tmp_path, name, cached):
    cls = TRAINER_REGISTRY.get(name)
    trainer = run(setup, tmp_path / "out", name, cached)
    assert isinstance(trainer, cls)
    log = tmp_path / "out" / "log.txt"
    acc = accuracies(log)
    assert len(acc) == 1 and 0 <= acc[0] <= 100, f"{name}: expected one final test result, got {acc}"
    uses_cache = cached and not end_to_end_only(cls)
    store = getattr(trainer, "feature_store", None)
    if uses_cache:
        assert store is not None and store.encoded > 0, f"{name} did not train on cached features"
    else:
        assert store is None, f"{name} used the feature cache with FEATURE_CACHE.ENABLED {cached}"
    for model in trainer.get_model_names():  # what it learned is saved where Dassl saves it
        assert os.path.isfile(tmp_path / "out" / model / "checkpoint"), f"{name}: no checkpoint for {model}"


@pytest.mark.parametrize("name", registered_names())
def test_the_base_checks_hold_for_every_registered_trainer(setup, tmp_path, name):
    """TEST.SPLIT train is refused for every trainer, even one whose check_cfg skips super()."""
    with pytest.raises(ConfigError, match=r"^TEST.SPLIT must be val or test, got 'train'\.$"):
        run(setup, tmp_path / "out", name, True, "TEST.SPLIT", "train")
    assert not (tmp_path / "out" / "config.yaml").exists()


def test_a_subclass_that_skips_super_still_gets_the_base_checks(setup, tmp_path, monkeypatch):
    monkeypatch.setattr(TRAINER_REGISTRY, "_obj_map", dict(TRAINER_REGISTRY._obj_map))

    @TRAINER_REGISTRY.register()
    class SkipsSuper(RowTuning):
        def check_cfg(self, cfg):  # Dassl's idiom: a trainer's own checks, no super()
            pass

    with pytest.raises(ConfigError, match="No CLIP backbone given"):
        run(setup, tmp_path / "out", "SkipsSuper", True, "MODEL.BACKBONE.NAME", "")


# ---- the documented minimal method: build_head and trainable_modules only -----------------------
class TunedRows(nn.Module):
    def __init__(self, text_features, logit_scale):
        super().__init__()
        self.weight = nn.Parameter(text_features.float().clone())
        self.register_buffer("logit_scale", logit_scale.detach().clone())

    def forward(self, image_features):
        return cosine_logits(image_features.float(), self.weight, self.logit_scale)


class RowTuning(FrozenCLIPTrainer):
    """The FrozenCLIPTrainer docstring's example, as written there."""

    def build_head(self, clip_model):
        text = prompt_features(clip_model, self.dm.dataset.classnames, ["a photo of a {}."])[0]
        return TunedRows(text, clip_model.logit_scale)

    def trainable_modules(self):
        return {"head": self.model}


def extend_cfg(cfg):
    cfg.TRAINER.RowTuning = CN()
    cfg.TRAINER.RowTuning.PREC = "fp32"


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "end_to_end"])
def test_a_method_with_only_build_head_trains_in_both_modes(setup, tmp_path, monkeypatch, cached):
    """Used to fail end to end with `mat1 and mat2 shapes cannot be multiplied`: the default
    forward_backward gave raw images to a head whose contract is features."""
    monkeypatch.setattr(TRAINER_REGISTRY, "_obj_map", dict(TRAINER_REGISTRY._obj_map))
    TRAINER_REGISTRY.register(RowTuning)
    trainer = run(setup, tmp_path / "out", "RowTuning", cached)
    assert len(accuracies(tmp_path / "out" / "log.txt")) == 1
    assert (trainer.feature_store is not None) == cached
    assert os.path.isfile(tmp_path / "out" / "head" / "checkpoint")


def test_end_to_end_and_cached_training_give_the_same_result_for_a_build_head_method(setup, tmp_path, monkeypatch):
    """With one view and one epoch, the cached run trains on exactly the crops the end-to-end run
    encodes, so the learned rows and the accuracy agree (up to float summation order)."""
    monkeypatch.setattr(TRAINER_REGISTRY, "_obj_map", dict(TRAINER_REGISTRY._obj_map))
    TRAINER_REGISTRY.register(RowTuning)
    cached = run(setup, tmp_path / "c", "RowTuning", True)
    e2e = run(setup, tmp_path / "e", "RowTuning", False)
    assert accuracies(tmp_path / "c" / "log.txt") == accuracies(tmp_path / "e" / "log.txt")
    assert (cached.model.weight - e2e.model.weight).abs().max().item() < 1e-4


def test_a_trainer_declares_end_to_end_by_its_protocol_or_a_class_attribute():
    from engine.protocol import Protocol

    class ByProtocol:
        protocol = Protocol(end_to_end=True)

    class ByAttribute:
        end_to_end_only = True

    class Cached:
        protocol = Protocol()

    assert end_to_end_only(ByProtocol) and end_to_end_only(ByAttribute) and not end_to_end_only(Cached)
