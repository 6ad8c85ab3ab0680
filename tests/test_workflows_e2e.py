"""The published workflows run for real (no --dry-run): train_regular.sh, train_enhance.sh,
test_dg.sh and scripts/summarize.py on miniature dataset replicas and the tiny CLIP, with
epochs and image size cut through the trailing config opts.

The steps build on each other (regular -> enhanced -> DG -> summary), so they share one
output tree. Under pytest-xdist the workers share it too: each step runs once, under a file
lock, and its outcome is stored next to the tree for whichever worker asks next.
"""
import fcntl
import glob
import json
import os
import re
import subprocess
import sys
import time

import pytest
import torch

from dataset_replicas import build_replica
from helpers import accuracies, tiny_clip

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Two epochs on 32x32 images: every code path of a run, in seconds on a CPU.
FAST_OPTS = ["OPTIM.MAX_EPOCH", "2", "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0",
             "DATALOADER.TRAIN_X.BATCH_SIZE", "8", "DATALOADER.TEST.BATCH_SIZE", "16",
             "TRAINER.TaskRes.PREC", "fp32"]
SHOTS, SEEDS = (1, 2), (1, 2)
TAG = "tiny_vit"  # the backbone tag of the tiny CLIP file: its stem
PETS_CFG = "adam_lr2e-3_B256_ep100"  # the scripts' rule for oxford_pets up to 4 shots
DG_RUN = f"adam_lr2e-4_B256_ep200_{TAG}_regular-base_alpha0.5_16shots"  # ImageNet, 16 shots
DG_TARGETS = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def pets_run(base, shots, seed, out):
    return os.path.join(out, "oxford_pets", "TaskRes", f"{PETS_CFG}_{TAG}_{base}-base_alpha0.5_{shots}shots",
                        f"seed{seed}")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """Paths of the shared tree: tiny CLIP, dataset replicas, output root, strong-base root."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the session's folder, common to every worker
    root = base / "workflows_e2e"
    root.mkdir(exist_ok=True)
    paths = {"root": str(root), "data": str(root / "data"), "out": str(root / "out"),
             "strong_base": str(root / "strong_base")}
    with _locked(root):
        paths["clip"] = tiny_clip(root)
        if not (root / "data.done").exists():
            for name in ("OxfordPets", "ImageNet", "ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR"):
                assert build_replica(name, paths["data"]) == paths["data"]  # one DATA root for all
            (root / "data.done").touch()
    return paths


class _locked:
    """An exclusive flock on <dir>/.lock for the block."""

    def __init__(self, folder):
        self.path = os.path.join(str(folder), ".lock")

    def __enter__(self):
        self.f = open(self.path, "w")
        fcntl.flock(self.f, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()


def _env(tree):
    env = {k: v for k, v in os.environ.items() if k not in ("DATA", "OUTPUT", "STRONG_BASE")}
    env.update(PYTHON=sys.executable, TASKRES_OFFLINE="1",
               # private to this tree (module fixtures run before conftest's per-test cache)
               TASKRES_FEATURE_CACHE=os.path.join(tree["root"], "feature_cache"),
               TASKRES_CLIP_CACHE=os.path.join(tree["root"], "clip_cache"))
    return env


def _script(tree, script, *args):
    start = time.monotonic()
    proc = subprocess.run(["bash", os.path.join(ROOT, script), *map(str, args), "--", *FAST_OPTS],
                          capture_output=True, text=True, env=_env(tree), cwd=tree["root"], timeout=300)
    return {"args": [script, *map(str, args)], "rc": proc.returncode, "stdout": proc.stdout,
            "stderr": proc.stderr, "seconds": time.monotonic() - start}


def _step(tree, name, run):
    """Run a workflow step once per tree (stored as <name>.json); return its recorded outcome."""
    record = os.path.join(tree["root"], f"{name}.json")
    with _locked(tree["root"]):
        if not os.path.exists(record):
            with open(record, "w") as f:
                json.dump(run(), f)
        with open(record) as f:
            return json.load(f)


def _ok(result):
    assert result["rc"] == 0, f"{' '.join(result['args'])} exited {result['rc']}:\n{result['stderr'][-4000:]}"


def _common(tree):
    return ["--backbone", tree["clip"], "--root", tree["data"], "--output", tree["out"]]


@pytest.fixture(scope="module")
def regular(tree):
    def run():
        grid = ["--datasets", "oxford_pets", "--shots", " ".join(map(str, SHOTS)),
                "--seeds", " ".join(map(str, SEEDS)), *_common(tree)]
        first = _script(tree, "train_regular.sh", *grid)
        return {"first": first, "again": _script(tree, "train_regular.sh", *grid)}

    return _step(tree, "regular", run)


@pytest.fixture(scope="module")
def enhanced(tree, regular):
    def run():
        # The 2-shot base is given in the original published format (as if downloaded), so
        # the workflow must use it as is; the 1-shot base it has to produce itself.
        width, dim = _clip_projection_shape(tree)
        given = os.path.join(tree["strong_base"], "OxfordPets", f"{TAG}_2shots", "model.pth.tar")
        os.makedirs(os.path.dirname(given), exist_ok=True)
        weight = torch.randn(dim, width, generator=torch.Generator().manual_seed(0))
        torch.save({"state_dict": {"weight": weight}, "epoch": 50, "optimizer": None,
                    "scheduler": None, "val_result": None}, given)
        with open(given, "rb") as f:
            given_bytes = f.read().hex()
        result = _script(tree, "train_enhance.sh", "--datasets", "oxford_pets", "--shots",
                         " ".join(map(str, SHOTS)), "--seeds", " ".join(map(str, SEEDS)),
                         "--strong-base-root", tree["strong_base"], *_common(tree))
        result["given_bytes"] = given_bytes
        return result

    return _step(tree, "enhanced", run)


@pytest.fixture(scope="module")
def dg(tree):
    def run():
        # The replica has 4 training images per class: the 16-shot run uses them all (warning path).
        source = _script(tree, "train_regular.sh", "--datasets", "imagenet", "--shots", "16", "--seeds", "1",
                         *_common(tree))
        # the tiny CLIP has no generalization_<tag> config of its own: use RN50's
        evaluation = _script(tree, "test_dg.sh", "--bases", "regular", "--seeds", "1", "--eval-cfg",
                             "generalization_rn50", *_common(tree))
        return {"source": source, "eval": evaluation}

    return _step(tree, "dg", run)


def _clip_projection_shape(tree):
    state = torch.load(tree["clip"], map_location="cpu", weights_only=False)
    return tuple(state["text_projection"].shape)  # [width, embed_dim]


def _base_features(run_dir):
    ckpt = torch.load(os.path.join(run_dir, "prompt_learner", "model.pth.tar-2"), map_location="cpu",
                      weights_only=False)
    return ckpt["state_dict"]["base_text_features"]


def _assert_finished(run_dir):
    assert os.path.isfile(os.path.join(run_dir, "results_test.json")), f"{run_dir} has no results_test.json"
    accs = accuracies(os.path.join(run_dir, "log.txt"))
    assert accs and 0.0 <= accs[-1] <= 100.0, f"{run_dir}/log.txt has no '* accuracy:' line"
    with open(os.path.join(run_dir, "results_test.json")) as f:
        assert abs(json.load(f)["accuracy"] - accs[-1]) < 0.06  # the log rounds to one decimal
    return accs[-1]


def test_regular_workflow_trains_every_run_and_skips_them_when_run_again(tree, regular):
    _ok(regular["first"])
    runs = [pets_run("regular", k, s, tree["out"]) for k in SHOTS for s in SEEDS]
    for run_dir in runs:
        _assert_finished(run_dir)
    assert regular["first"]["stderr"].count("[taskres] start: TaskRes oxford_pets") == len(runs)
    # the folder names every varied setting, and nothing else was made
    found = sorted(glob.glob(os.path.join(tree["out"], "oxford_pets", "TaskRes", "*regular*", "seed*")))
    assert found == sorted(runs)

    again = regular["again"]
    _ok(again)
    assert "start:" not in again["stderr"]
    for run_dir in runs:
        assert f"skip (finished): {run_dir}" in again["stderr"]
    for run_dir in runs:  # no train.py started in them: a later run would append its "new run" line to log.txt
        with open(os.path.join(run_dir, "log.txt")) as f:
            assert "==== new run in this folder" not in f.read(), f"{run_dir} was run again instead of skipped"


def test_enhanced_workflow_makes_missing_bases_then_trains_on_them(tree, regular, enhanced):
    _ok(enhanced)
    width, dim = _clip_projection_shape(tree)
    made = os.path.join(tree["strong_base"], "OxfordPets", f"{TAG}_1shots", "model.pth.tar")
    given = os.path.join(tree["strong_base"], "OxfordPets", f"{TAG}_2shots", "model.pth.tar")

    # the produced base is a Dassl checkpoint holding nn.Linear's weight [embed_dim, width]
    ckpt = torch.load(made, map_location="cpu", weights_only=False)
    assert isinstance(ckpt, dict) and {"state_dict", "epoch"} <= set(ckpt)
    assert tuple(ckpt["state_dict"]["weight"].shape) == (dim, width)
    assert torch.isfinite(ckpt["state_dict"]["weight"]).all()
    assert f"start: StrongBase oxford_pets 1-shot -> {made}" in enhanced["stderr"]
    # the given base is used as it is: not produced again, not rewritten
    assert f"skip (exists): {given}" in enhanced["stderr"]
    assert "StrongBase oxford_pets 2-shot" not in enhanced["stderr"]
    with open(given, "rb") as f:
        assert f.read().hex() == enhanced["given_bytes"]

    for shots, base_file in ((1, made), (2, given)):
        for seed in SEEDS:
            run_dir = pets_run("enhanced", shots, seed, tree["out"])
            regular_dir = pets_run("regular", shots, seed, tree["out"])
            assert run_dir != regular_dir
            _assert_finished(run_dir)
            with open(os.path.join(run_dir, "log.txt")) as f:
                assert f"Using the enhanced base from {base_file}" in f.read()
            enh, reg = _base_features(run_dir), _base_features(regular_dir)
            assert enh.shape == reg.shape and not torch.allclose(enh, reg), run_dir


def test_enhanced_workflow_writes_nothing_into_the_repository(tree, enhanced):
    _ok(enhanced)
    assert not glob.glob(os.path.join(ROOT, "strong_base", "*", f"{TAG}_*shots"))
    assert not os.path.exists(os.path.join(ROOT, "output", "oxford_pets", "TaskRes", f"{PETS_CFG}_{TAG}_regular-base"
                                                                                    f"_alpha0.5_1shots"))


def test_dg_workflow_evaluates_the_imagenet_run_on_all_four_targets(tree, dg):
    _ok(dg["source"])
    source_dir = os.path.join(tree["out"], "imagenet", "TaskRes", DG_RUN, "seed1")
    _assert_finished(source_dir)
    assert "fewer than NUM_SHOTS=16" in dg["source"]["stderr"] + dg["source"]["stdout"]

    _ok(dg["eval"])
    for target in DG_TARGETS:
        run_dir = os.path.join(tree["out"], "dg", target, "TaskRes", DG_RUN, "seed1")
        _assert_finished(run_dir)
        with open(os.path.join(run_dir, "log.txt")) as f:
            log = f.read()
        # the last-epoch checkpoint of the source run (MAX_EPOCH 2 from the opts)
        assert re.search(rf'Loading weights to prompt_learner from ".*{DG_RUN}/seed1/prompt_learner/model\.pth\.tar-2"',
                         log), f"{run_dir}/log.txt does not load the source checkpoint of epoch 2"
        selecting = re.search(r"Selecting the (\d+) classes", log)
        if target in ("imagenet_a", "imagenet_r"):
            assert selecting and int(selecting.group(1)) == 3, f"{target} did not select its 3 of 6 classes"
        else:
            assert selecting is None, f"{target} holds all 6 classes but selected some"


def test_summary_tables_and_plots(tree, regular, enhanced, dg):
    for result in (regular["first"], enhanced, dg["source"], dg["eval"]):
        _ok(result)
    summary_dir = os.path.join(tree["root"], "summary")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "summarize.py"), tree["out"],
                           "--out", summary_dir], capture_output=True, text=True, env=_env(tree), timeout=120)
    assert proc.returncode == 0, proc.stderr

    with open(os.path.join(summary_dir, "summary.md")) as f:
        summary = f.read()
    pets = summary.split("## oxford_pets", 1)[1].split("\n## ", 1)[0]
    cell = r"\d+\.\d+ ± \d+\.\d+ \(n=2\)"
    for label in ("TaskRes (regular base)", "TaskRes (enhanced base)"):
        row = re.search(rf"^\| {re.escape(label)} \|(.*)$", pets, re.M)
        assert row, f"summary.md has no oxford_pets row '{label}':\n{summary}"
        cells = [c.strip() for c in row.group(1).split("|") if c.strip()]
        assert len(re.findall(cell, row.group(1))) == len(SHOTS), row.group(0)  # 1 and 2 shots, 2 seeds each
        assert len(cells) >= len(SHOTS)

    pngs = glob.glob(os.path.join(summary_dir, "*.png"))
    assert pngs
    for png in pngs:
        with open(png, "rb") as f:
            assert f.read(8) == PNG_MAGIC, f"{png} is not a PNG"
    assert os.path.join(summary_dir, "oxford_pets.png") in pngs

    with open(os.path.join(summary_dir, "dg.md")) as f:
        dg_md = f.read()
    header = re.search(r"^\| method \|(.*)$", dg_md, re.M)
    assert header and all(t in header.group(1) for t in DG_TARGETS), dg_md
    row = re.search(r"^\| TaskRes \(regular base\) \|(.*)$", dg_md, re.M)
    assert row and len(re.findall(r"\d+\.\d+ ± \d+\.\d+ \(n=1\)", row.group(1))) == 1 + len(DG_TARGETS), dg_md
