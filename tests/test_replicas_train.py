"""Every registered dataset trains and evaluates through train.py (TaskRes, tiny CLIP), and every registered
trainer runs end to end on one replica: tests are parametrized over the registries (timm-style), so a
dataset or trainer registered without a replica or a run here fails a test that names it."""
import json
import os
import stat

import pytest

import datasets  # noqa: F401  (registers every dataset)
import trainers  # noqa: F401  (registers every trainer)
from dataset_replicas import REPLICA_NAMES, REPLICA_OPTS, build_replica
from engine.data.datasets import DATASET_REGISTRY
from engine.trainer import TRAINER_REGISTRY
from helpers import accuracies, run_train, tiny_clip, write_tiny_config


@pytest.mark.parametrize("name", DATASET_REGISTRY.registered_names())
def test_taskres_runs_on_each_replica(tmp_path, name):
    assert name in REPLICA_NAMES, f"{name} is registered but tests/dataset_replicas.py has no replica of it"
    root = build_replica(name, tmp_path / "data")
    cfg = write_tiny_config(tmp_path / "cfg.yaml", tiny_clip(tmp_path), dataset=name, epochs=2)
    out = tmp_path / "out"
    trainer = run_train("--root", root, "--seed", 1, "--trainer", "TaskRes", "--config-file", cfg,
                        "--output-dir", out, "DATASET.NUM_SHOTS", 2,
                        *[x for kv in REPLICA_OPTS.get(name, {}).items() for x in kv])
    assert len(accuracies(out / "log.txt")) == 1
    assert trainer.model.prompt_learner.base_text_features.shape[0] == trainer.num_classes
    results = out / "results_test.json"
    assert round(json.loads(results.read_text())["accuracy"], 1) == accuracies(out / "log.txt")[0]
    # written atomically, yet with the permissions a plain open() gives under this umask (mkstemp: 0600)
    plain = out / "plain"
    plain.write_text("")
    assert stat.S_IMODE(os.stat(results).st_mode) == stat.S_IMODE(os.stat(plain).st_mode)


# How each trainer is run here beyond the shared tiny config: (flags, opts), "{tmp}" being the test's
# tmp_path. A trainer registered without an entry fails test_every_registered_trainer_runs_on_a_replica
# by name: add its arguments here when it needs more than the defaults.
TRAINER_ARGS = {
    "TaskRes": ([], []),
    "StrongBase": ([], ["STRONG_BASE.ROOT", "{tmp}/strong_base"]),  # not the repository's strong_base/
    "ZeroshotCLIP": (["--eval-only"], []),
    "ZeroshotCLIP2": (["--eval-only"], []),
    "LinearProbe": ([], ["TRAINER.LINEAR_PROBE.NUM_STEP", "2"]),
    "CLIP_Adapter": ([], []),
    "TipAdapter": ([], ["TRAINER.TIP_ADAPTER.AUGMENT_EPOCH", "2", "TRAINER.TIP_ADAPTER.SEARCH_STEP", "[10, 5]"]),
    "TipAdapterF": ([], ["TRAINER.TIP_ADAPTER.AUGMENT_EPOCH", "2", "TRAINER.TIP_ADAPTER.SEARCH_STEP", "[10, 5]"]),
    "CoOp": ([], ["TRAINER.COOP.N_CTX", "4"]),
    "CoCoOp": ([], ["TRAINER.COCOOP.N_CTX", "4"]),
    "MVLPT": ([], ["TRAINER.MVLPT.COOP.N_CTX", "2"]),
    "MaPLe": ([], ["TRAINER.MAPLE.PROMPT_DEPTH", "1"]),  # the tiny ViT has 1 layer
    "PromptSRC": ([], ["TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION", "1", "TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", "1"]),
    "CLIP_LoRA": ([], ["TRAINER.CLIP_LORA.N_ITERS", "1"]),  # its iterations: N_ITERS x shots
    "KgCoOp": ([], ["TRAINER.KGCOOP.N_CTX", "4"]),
    "ProGrad": ([], ["TRAINER.PROGRAD.N_CTX", "4"]),
    "CLAP": ([], ["TRAINER.CLAP.AUG_VIEWS", "2"]),
    "LPPlusPlus": ([], []),
}


@pytest.mark.parametrize("name", TRAINER_REGISTRY.registered_names())
def test_every_registered_trainer_runs_on_a_replica(tmp_path, name):
    assert name in TRAINER_ARGS, f"trainer {name} is registered but has no entry in TRAINER_ARGS of this test"
    flags, opts = TRAINER_ARGS[name]
    root = build_replica("ImageFolder", tmp_path / "data")
    cfg = write_tiny_config(tmp_path / "cfg.yaml", tiny_clip(tmp_path), dataset="ImageFolder", epochs=2)
    out = tmp_path / "out"
    run_train("--root", root, "--seed", 1, "--trainer", name, "--config-file", cfg, "--output-dir", out, *flags,
              "DATASET.NUM_SHOTS", 2, *[o.format(tmp=tmp_path) for o in opts])
    acc = accuracies(out / "log.txt")
    assert len(acc) == 1 and 0.0 <= acc[0] <= 100.0


# Trainers whose loop is epochs of batches with an OPTIM schedule: Dassl's convention is that the
# trainer steps the scheduler at each epoch's last batch (after_epoch does not), so after E epochs
# every registered scheduler has stepped exactly E times. (Tip-Adapter-F steps per iteration, as
# its original does; the fit-once and training-free trainers have no epoch loop.)
EPOCH_SCHEDULED = ["TaskRes", "StrongBase", "CLIP_Adapter", "CoOp", "CoCoOp", "MVLPT", "MaPLe", "PromptSRC", "KgCoOp",
                   "ProGrad"]


@pytest.mark.parametrize("name", EPOCH_SCHEDULED)
def test_epoch_trainers_step_the_lr_once_per_epoch(tmp_path, name):
    flags, opts = TRAINER_ARGS[name]
    root = build_replica("ImageFolder", tmp_path / "data")
    cfg = write_tiny_config(tmp_path / "cfg.yaml", tiny_clip(tmp_path), dataset="ImageFolder", epochs=3)
    trainer = run_train("--root", root, "--seed", 1, "--trainer", name, "--config-file", cfg,
                        "--output-dir", tmp_path / "out", *flags, "DATASET.NUM_SHOTS", 2,
                        *[o.format(tmp=tmp_path) for o in opts])
    scheds = [s for s in trainer._scheds.values() if s is not None]
    assert scheds and all(s.last_epoch == 3 for s in scheds), [s.last_epoch for s in scheds]
