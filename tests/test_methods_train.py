"""The comparison methods through train.py with a tiny CLIP: each trains and evaluates on a
dataset replica, its zero-shot invariant holds at the trainer level, it resumes after SIGKILL to
the result of an uninterrupted run, its bad config values end in one sentence, and its config
files load and hold the numbers of the methods' declared protocols (scripts/plan.py plans from them)."""
import glob
import os
import signal
import subprocess
import sys

import pytest
import torch
import yaml

from dataset_replicas import REPLICA_NAMES, REPLICA_OPTS, build_replica
from engine.config import get_cfg_default, merge_from_file
from engine.errors import ConfigError
from helpers import ROOT, accuracies, make_image_folder, run_train, tiny_clip, write_tiny_config

import trainers
from scripts.plan import config_file
from trainers.tip_adapter import PUBLISHED as TIP_PUBLISHED
from trainers.templates import IMAGENET_TEMPLATES_SELECT

METHODS = ("ZeroshotCLIP2", "LinearProbe", "CLIP_Adapter", "TipAdapter", "TipAdapterF")
# small search grids and few views keep the runs short; the grids' shape is tested in test_methods.py
FAST = {
    "TipAdapter": ["TRAINER.TIP_ADAPTER.AUGMENT_EPOCH", 2, "TRAINER.TIP_ADAPTER.SEARCH_STEP", "[10, 5]"],
    "TipAdapterF": ["TRAINER.TIP_ADAPTER.AUGMENT_EPOCH", 2, "TRAINER.TIP_ADAPTER.SEARCH_STEP", "[10, 5]"],
    "LinearProbe": ["TRAINER.LINEAR_PROBE.NUM_STEP", 2],
}
MODEL_NAME = {"LinearProbe": "linear_probe", "CLIP_Adapter": "clip_adapter", "TipAdapter": "tip_adapter",
              "TipAdapterF": "tip_adapter"}


def last_epoch(out, name):
    with open(os.path.join(str(out), name, "checkpoint")) as f:
        return int(f.read().strip().rsplit("-", 1)[1])


def final_state(out, name):
    """The state dict of the checkpoint the run's pointer names."""
    path = os.path.join(str(out), name, f"model.pth.tar-{last_epoch(out, name)}")
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


# ---- each method through train.py on a replica -----------------------------------------------
@pytest.mark.parametrize("method, replica", [
    ("ZeroshotCLIP2", "ImageNet"),  # 7 templates, no dataset one
    ("LinearProbe", "ImageNet"),  # val is the test set: lpclip's min(K, 4) val draw applies
    ("CLIP_Adapter", "OxfordPets"),
    ("TipAdapter", "DescribableTextures"),
    ("TipAdapterF", "EuroSAT"),
])
def test_method_trains_and_evaluates_on_a_replica(tmp_path, method, replica):
    root = build_replica(replica, tmp_path / "data")
    cfg = write_tiny_config(tmp_path / "cfg.yaml", tiny_clip(tmp_path), dataset=replica, epochs=2, batch=4)
    out = tmp_path / "out"
    common = ["--root", root, "--seed", 1, "--trainer", method, "--config-file", cfg]
    run_train(*common, "--output-dir", out, "DATASET.NUM_SHOTS", 2, *FAST.get(method, []))
    acc = accuracies(out / "log.txt")
    assert len(acc) == 1
    # evaluating the saved result again gives the same accuracy
    model = ["--model-dir", out, "--load-epoch", last_epoch(out, MODEL_NAME[method])] if method in MODEL_NAME else []
    run_train(*common, "--output-dir", tmp_path / "eval", "--eval-only", *model, "DATASET.NUM_SHOTS", 2, *FAST.get(method, []))
    assert accuracies(tmp_path / "eval" / "log.txt") == acc


DG_TARGETS = ("ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR")  # test split only
SEARCHES_ON_VAL = ("LinearProbe", "TipAdapter", "TipAdapterF")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("replica", REPLICA_NAMES)
def test_method_runs_on_every_replica(tmp_path, method, replica):
    """Every comparison method trains (1 epoch) and evaluates through train.py on every dataset replica."""
    root = build_replica(replica, tmp_path / "data")
    cfg = write_tiny_config(tmp_path / "cfg.yaml", tiny_clip(tmp_path), dataset=replica, epochs=1, batch=4)
    flags = ["--eval-only"] if method == "ZeroshotCLIP2" else []
    argv = ["--root", root, "--seed", 1, "--trainer", method, "--config-file", cfg, *flags,
            "--output-dir", tmp_path / "out", "DATASET.NUM_SHOTS", 1, *FAST.get(method, []),
            *[x for kv in REPLICA_OPTS.get(replica, {}).items() for x in kv]]
    if replica in DG_TARGETS and method in SEARCHES_ON_VAL:  # test-only sets: fit on ImageNet (DG protocol)
        with pytest.raises(ConfigError, match=rf"{method} searches .* on a val split, but {replica} has none"):
            run_train(*argv)
        return
    trainer = run_train(*argv)
    acc = accuracies(tmp_path / "out" / "log.txt")
    assert len(acc) == 1 and 0.0 <= acc[0] <= 100.0
    assert trainer.num_classes == trainer.dm.dataset.num_classes


# ---- zero-shot invariants at the trainer level ----------------------------------------------------
@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("methods")
    data = make_image_folder(tmp / "data")
    return {"data": data, "cfg": write_tiny_config(tmp / "cfg.yaml", tiny_clip(tmp), epochs=3, batch=4), "tmp": tmp}


def build(folder, tmp_path, method, *opts):
    return run_train("--root", folder["data"], "--seed", 1, "--trainer", method, "--config-file", folder["cfg"],
                     "--output-dir", tmp_path / method, "--no-train", "DATASET.NUM_SHOTS", 4, *opts)


def test_tip_adapter_alpha_0_and_clip_adapter_ratio_0_are_zero_shot_clip(folder, tmp_path):
    zs = build(folder, tmp_path, "ZeroshotCLIP")
    feats = zs.test_loader.all_features()[0]
    expected = zs.model_inference(feats)
    adapter = build(folder, tmp_path, "CLIP_Adapter", "TRAINER.CLIP_ADAPTER.RATIO", 0.0)
    assert torch.allclose(adapter.model_inference(feats), expected, atol=1e-4)
    tip = build(folder, tmp_path, "TipAdapter", "TRAINER.TIP_ADAPTER.INIT_ALPHA", 0.0, "TRAINER.TIP_ADAPTER.AUGMENT_EPOCH", 2)
    tip.fill_cache()
    # the original's 100, not this CLIP's exp(logit_scale) (1 / 0.07): the same zero-shot CLIP, rescaled
    scale = zs.clip_model.logit_scale.exp().item()
    assert abs(scale - 100.0) > 50 and float(tip.model.logit_scale) == 100.0
    assert torch.allclose(tip.model_inference(feats), expected * (100.0 / scale), atol=1e-3)
    tip.model.set_hp(alpha=1.0, beta=1.0)  # the cache does change the logits: the check can fail
    assert not torch.allclose(tip.model_inference(feats), expected, atol=1e-2)


def test_zsclip2_classifier_is_the_ensemble_of_eight_prompts_per_class(folder, tmp_path):
    import clip

    trainer = build(folder, tmp_path, "ZeroshotCLIP2")
    model = trainer.clip_model
    names = [c.replace("_", " ") for c in trainer.dm.dataset.classnames]
    templates = list(IMAGENET_TEMPLATES_SELECT) + ["a photo of a {}."]  # ImageFolder's own: the default
    with torch.no_grad():
        rows = []
        for name in names:  # by hand, one class at a time as CoOp's loop over templates sums them
            emb = model.encode_text(clip.tokenize([t.format(name) for t in templates]))
            emb = (emb / emb.norm(dim=-1, keepdim=True)).sum(0) / len(templates)
            rows.append(emb / emb.norm())
    torch.testing.assert_close(trainer.model.text_features, torch.stack(rows), rtol=1e-5, atol=1e-6)


# ---- resume after SIGKILL -------------------------------------------------------------------------
# The child runs train.main with one function wrapped so that it SIGKILLs itself at a fixed point.
CHILD = r"""
import os, signal, sys
sys.path.insert(0, {root!r})
target, when, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
module_name, attr = target.rsplit(".", 1)
import importlib
module = importlib.import_module(module_name)
owner, name = (getattr(module, attr.split(":")[0]), attr.split(":")[1]) if ":" in attr else (module, attr)
original = getattr(owner, name)
calls = [0]
def wrapped(*a, **k):
    calls[0] += 1
    if calls[0] == int(when):
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*a, **k)
setattr(owner, name, wrapped)
import train
train.main(argv)
"""


@pytest.mark.parametrize("method, target, when", [
    ("LinearProbe", "trainers.methods.linear_probe.fit_logistic", 5),  # in the coarse C list
    ("CLIP_Adapter", "trainers.clip_adapter.CLIP_Adapter:forward_backward", 8),  # epoch 3, batch 2
    ("TipAdapter", "trainers.tip_adapter.search_hp", 1),  # cache built, search under way
    ("TipAdapterF", "trainers.tip_adapter.TipAdapterF:forward_backward", 8),
])
def test_sigkill_then_the_same_command_ends_as_an_uninterrupted_run(folder, tmp_path, method, target, when):
    def argv(out):
        return ["--root", folder["data"], "--seed", 1, "--trainer", method, "--config-file", folder["cfg"],
                "--output-dir", out, "DATASET.NUM_SHOTS", 4, "TRAIN.RESUME_SAVE_SECONDS", 0, *FAST.get(method, [])]

    ref, out = tmp_path / "reference", tmp_path / "out"
    run_train(*argv(ref))
    proc = subprocess.run([sys.executable, "-c", CHILD.format(root=ROOT), target, str(when), *map(str, argv(out))],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    run_train(*argv(out))
    name = MODEL_NAME[method]
    epoch = last_epoch(ref, name)
    assert last_epoch(out, name) == epoch
    log = out / "log.txt"  # the resumed run appends to it after a separator line
    if method in ("CLIP_Adapter", "TipAdapterF"):  # resumed from epoch 2, not retrained from scratch
        resumed = log.read_text().rsplit("new run in this folder", 1)[1]
        assert "Previous epoch: 2" in resumed and "epoch [2/3]" not in resumed
    assert accuracies(log)[-1] == accuracies(ref / "log.txt")[-1]
    state = [final_state(d, name) for d in (ref, out)]
    assert state[0].keys() == state[1].keys()
    assert all(torch.equal(state[0][k], state[1][k]) for k in state[0])


# ---- bad config values: one sentence each ---------------------------------------------------------
@pytest.mark.parametrize("method, key, value, message", [
    ("CLIP_Adapter", "TRAINER.CLIP_ADAPTER.RATIO", 1.5, "TRAINER.CLIP_ADAPTER.RATIO must be a number in [0, 1]"),
    ("CLIP_Adapter", "TRAINER.CLIP_ADAPTER.REDUCTION", 0, "TRAINER.CLIP_ADAPTER.REDUCTION must be a positive integer"),
    ("CLIP_Adapter", "TRAINER.CLIP_ADAPTER.REDUCTION", 64, "leaves no hidden unit for this backbone's 32-d features"),
    ("CLIP_Adapter", "TRAINER.CLIP_ADAPTER.PREC", "fp8", "TRAINER.CLIP_ADAPTER.PREC must be one of fp16, fp32, amp"),
    ("LinearProbe", "TRAINER.LINEAR_PROBE.NUM_STEP", -1, "TRAINER.LINEAR_PROBE.NUM_STEP must be an integer >= 0"),
    ("LinearProbe", "TRAINER.LINEAR_PROBE.MAX_ITER", 0, "TRAINER.LINEAR_PROBE.MAX_ITER must be a positive integer"),
    ("TipAdapter", "TRAINER.TIP_ADAPTER.SEARCH_STEP", "[0, 20]", "TRAINER.TIP_ADAPTER.SEARCH_STEP must be two positive integers"),
    ("TipAdapter", "TRAINER.TIP_ADAPTER.SEARCH_SCALE", "[7.0]", "TRAINER.TIP_ADAPTER.SEARCH_SCALE must be two positive numbers"),
    ("TipAdapter", "TRAINER.TIP_ADAPTER.AUGMENT_EPOCH", 0, "TRAINER.TIP_ADAPTER.AUGMENT_EPOCH must be a positive integer"),
    ("TipAdapterF", "TRAINER.TIP_ADAPTER.LR", 0.0, "TRAINER.TIP_ADAPTER.LR must be a positive number"),
    ("TipAdapterF", "TRAINER.TIP_ADAPTER.INIT_BETA", -1.0, "TRAINER.TIP_ADAPTER.INIT_BETA must be a number >= 0"),
    ("ZeroshotCLIP2", "TRAINER.ZeroshotCLIP2.PREC", "fp8", "TRAINER.ZeroshotCLIP2.PREC must be one of"),
])
def test_bad_config_value_is_one_sentence(folder, tmp_path, method, key, value, message):
    with pytest.raises(ConfigError) as info:
        build(folder, tmp_path, method, key, value)
    text = str(info.value)
    assert message in text and str(value).strip("[]") in text
    assert "\n" not in text and text.endswith(".")


# ---- config files ---------------------------------------------------------------------------------
MY_CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "trainers", "*", "*.yaml")))
MY_CONFIGS = [p for p in MY_CONFIGS if p.split(os.sep)[-2] in METHODS]


def _leaves(node, prefix=""):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@pytest.mark.parametrize("path", MY_CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_method_configs_load_with_their_values_and_pass_the_engine_checks(path):
    """Every value the file sets lands in the config as written (yacs decodes "(0.5, 1.0)" to a tuple),
    and the result passes the checks every run gets, for the trainer the folder is named after."""
    from yacs.config import CfgNode as CN

    from engine import TRAINER_REGISTRY
    from engine.checks import check_trainer_keys, check_values

    cfg = trainers.extend_cfg(get_cfg_default())
    merge_from_file(cfg, path)
    with open(path) as f:
        written = dict(_leaves(CN.load_cfg(f)))
    assert written, f"{path} sets nothing"
    for key, value in written.items():
        node = cfg
        for part in key.split("."):
            node = node[part]
        value = CN._decode_cfg_value(value)  # what yacs' merge makes of the text
        want = list(value) if isinstance(value, (list, tuple)) else value
        got = list(node) if isinstance(node, (list, tuple)) else node
        assert got == want, f"{key}: {got!r} in the config, {value!r} in {path}"
    trainer = path.split(os.sep)[-2]
    cls = TRAINER_REGISTRY.get(trainer)
    check_values(cfg, trains=cls.training_free is not True, epoch_loop=getattr(cls, "epoch_loop", True))
    check_trainer_keys(cfg, trainer, cls, TRAINER_REGISTRY)  # sets no other trainer's keys


@pytest.mark.parametrize("dataset", sorted(TIP_PUBLISHED))
def test_tip_adapter_configs_hold_the_published_numbers(dataset):
    scale, alpha, beta, epochs = TIP_PUBLISHED[dataset]
    for method in ("TipAdapter", "TipAdapterF"):
        with open(os.path.join(ROOT, config_file(method, dataset, 16))) as f:
            y = yaml.safe_load(f)
        tip = y["TRAINER"]["TIP_ADAPTER"]
        assert (tip["SEARCH_SCALE"], tip["INIT_ALPHA"], tip["INIT_BETA"]) == (scale, alpha, beta)
        assert (tip["SEARCH_STEP"], tip["AUGMENT_EPOCH"], tip["LR"]) == ([200, 20], 10, 0.001)
        assert y["INPUT"]["RRCROP_SCALE"] == "(0.5, 1.0)"
        if method == "TipAdapterF":
            assert y["OPTIM"]["MAX_EPOCH"] == epochs


@pytest.mark.parametrize("shots, epochs", [(1, 50), (2, 100), (4, 100), (8, 200), (16, 200)])
def test_clip_adapter_follows_coops_per_shot_epochs(shots, epochs):
    for dataset, want in (("oxford_pets", epochs), ("imagenet", 50)):
        with open(os.path.join(ROOT, config_file("CLIP_Adapter", dataset, shots))) as f:
            assert yaml.safe_load(f)["OPTIM"]["MAX_EPOCH"] == want


@pytest.mark.parametrize("method", METHODS)
def test_every_method_has_a_config_file(method):
    assert os.path.isfile(os.path.join(ROOT, config_file(method, "oxford_pets", 1)))


# ---- cached mode = end-to-end mode when views = epochs ---------------------------------------------
@pytest.mark.parametrize("method", ["LinearProbe", "CLIP_Adapter", "TipAdapter", "TipAdapterF"])
def test_cached_mode_equals_end_to_end_mode(folder, tmp_path, method):
    def run(name, *opts):
        out = tmp_path / name
        trainer = run_train("--root", folder["data"], "--seed", 1, "--trainer", method, "--config-file", folder["cfg"],
                            "--output-dir", out, "DATASET.NUM_SHOTS", 4, *FAST.get(method, []), *opts)
        return trainer, out

    e2e, e2e_out = run("e2e", "FEATURE_CACHE.ENABLED", False)
    assert e2e.feature_store is None  # the encoder ran in the loop
    cached, cached_out = run("cached", "FEATURE_CACHE.TRAIN_VIEWS", 3)  # 3 epochs in the tiny config
    assert cached.feature_store.encoded > 0
    assert accuracies(cached_out / "log.txt") == accuracies(e2e_out / "log.txt")
    a, b = (final_state(out, MODEL_NAME[method]) for out in (cached_out, e2e_out))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


# ---- domain generalisation: an ImageNet fit evaluated on the variants -------------------------------
@pytest.mark.parametrize("method", ["LinearProbe", "TipAdapter", "TipAdapterF", "CLIP_Adapter"])
def test_imagenet_fit_evaluates_on_its_variants(tmp_path, method):
    data = tmp_path / "data"
    for name in ("ImageNet", "ImageNetA", "ImageNetSketch"):
        build_replica(name, data)
    cfg = write_tiny_config(tmp_path / "cfg.yaml", tiny_clip(tmp_path), dataset="ImageNet", epochs=2, batch=4)
    out = tmp_path / "imagenet"
    common = ["--root", data, "--seed", 1, "--trainer", method, "--config-file", cfg]
    run_train(*common, "--output-dir", out, "DATASET.NUM_SHOTS", 2, *FAST.get(method, []))
    epoch = last_epoch(out, MODEL_NAME[method])
    for target in ("ImageNetA", "ImageNetSketch"):  # 3 of the 6 classes; all 6
        ev = tmp_path / target
        trainer = run_train(*common, "--output-dir", ev, "--eval-only", "--model-dir", out, "--load-epoch", epoch,
                            "DATASET.NAME", target, *FAST.get(method, []))
        assert len(accuracies(ev / "log.txt")) == 1
        assert trainer.model_inference(trainer.test_loader.all_features()[0]).shape[1] == trainer.num_classes


@pytest.mark.parametrize("method", ["CLIP_Adapter", "CoOp"])
def test_trained_methods_step_their_lr_schedule_once_per_epoch(folder, tmp_path, method):
    """Warm-up epoch at the constant 1e-5, then the schedule's values: CLIP-Adapter's LR once stayed
    at 1e-5 for every epoch (it never stepped its scheduler), so its adapter hardly trained."""
    import re

    out = tmp_path / method
    run_train("--root", folder["data"], "--seed", 1, "--trainer", method, "--config-file", folder["cfg"],
              "--output-dir", out, "DATASET.NUM_SHOTS", 4, "OPTIM.WARMUP_EPOCH", 1)
    with open(out / "log.txt") as f:
        lrs = {int(e): float(lr) for e, lr in re.findall(r"epoch \[(\d+)/\d+\] batch \[1/.* lr ([0-9.e+-]+)", f.read())}
    assert lrs[1] == pytest.approx(1e-5)
    assert lrs[2] == pytest.approx(0.01) and lrs[3] < lrs[2]  # tiny config: lr 0.01, cosine after the warm-up
