"""The disk faults of tests/test_faults.py on real file systems: a full disk and a read-only folder.

tests/test_faults.py simulates them at the system calls; here a small tmpfs, mounted and removed by
the test, is filled up (or a folder on it is remounted read-only) at the start of a run or in the
middle of one: for the output folder, the checkpoint folder, the feature cache and the dataset
folder. Each time: one sentence (or, where the run can go on, one warning), nothing written before
is lost, and once space is back the same command resumes to the result of an uninterrupted run.
Mounting needs root with CAP_SYS_ADMIN; elsewhere the tests skip, saying so.
"""
import errno
import os
import re
import shutil
import subprocess
import sys
import uuid

import pytest
import torch

from helpers import ROOT, accuracies, make_image_folder, run_train, tiny_clip, write_tiny_config

EPOCHS = 6
SIZE = "4m"  # the tmpfs: room for a run, small enough to fill in a moment


def _mount(*args):
    return subprocess.run(["mount", *args], capture_output=True, text=True)


def _can_mount():
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    probe = f"/tmp/.mount-probe-{uuid.uuid4().hex}"
    os.makedirs(probe)
    try:
        done = _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", probe)
        if done.returncode:
            return f"mount -t tmpfs is not allowed here ({done.stderr.strip()})"
        subprocess.run(["umount", probe], check=True)
        return None
    finally:
        os.rmdir(probe)


CANNOT_MOUNT = _can_mount()
pytestmark = pytest.mark.skipif(CANNOT_MOUNT is not None, reason=str(CANNOT_MOUNT))


# ---- the faults ------------------------------------------------------------------------------
def fill(folder):
    """Write a ballast file into ``folder`` until its file system has no page left."""
    path = os.path.join(folder, ".ballast")
    with open(path, "ab", buffering=0) as f:
        for chunk in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e


def make_read_only(folder):
    """Bind ``folder`` onto itself read-only (for root too: the mount refuses writes, not the mode)."""
    subprocess.run(["mount", "--bind", folder, folder], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", folder], check=True)


def undo(folder):
    """Space back / writable again."""
    ballast = os.path.join(folder, ".ballast")
    if os.path.exists(ballast):
        os.remove(ballast)
    while _is_bind_mounted(folder):
        subprocess.run(["umount", folder], check=True)


def _is_bind_mounted(folder):
    folder = os.path.realpath(folder)
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f]
    return points.count(folder) > (1 if folder == _TMPFS.get("root") else 0)


_TMPFS = {}


@pytest.fixture
def tmpfs(tmp_path):
    """A fresh small tmpfs; unmounted (with everything bound on it) at the end."""
    root = str(tmp_path / "mnt")
    os.makedirs(root)
    done = _mount("-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", root)
    assert done.returncode == 0, done.stderr
    _TMPFS["root"] = os.path.realpath(root)
    yield root
    with open("/proc/self/mounts") as f:
        nested = [line.split()[1] for line in f if line.split()[1].startswith(os.path.realpath(root))]
    for point in sorted(nested, key=len, reverse=True) + [root]:
        subprocess.run(["umount", "-l", point], capture_output=True)
    _TMPFS.clear()


# The child: train.py's cli with an action at one moment of the run (a real fault, not a mock).
CHILD = r"""
import os, sys
sys.path.insert(0, {root!r}); sys.path.insert(0, os.path.join({root!r}, "tests"))
moment, action, folder, argv = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
import test_faults_fs as t
def act():
    (t.fill if action == "full" else t.make_read_only)(folder)
if moment == "epoch4":  # as epoch 4 begins (after checkpoint 3): the log line comes first
    from trainers.taskres import TaskRes
    real = TaskRes.before_epoch
    def before_epoch(self):
        if self.epoch + 1 == 4:
            act()
        return real(self)
    TaskRes.before_epoch = before_epoch
elif moment in ("checkpoint4", "pointer4"):  # just before checkpoint 4's file / its pointer is written
    from engine.utils import checkpoint
    save, text = checkpoint.atomic_torch_save, checkpoint.atomic_write_text
    def atomic_torch_save(obj, path):
        if moment == "checkpoint4" and os.path.basename(path) == "model.pth.tar-4":
            act()
        return save(obj, path)
    def atomic_write_text(path, body):
        if moment == "pointer4" and body.strip() == "model.pth.tar-4":
            act()
        return text(path, body)
    checkpoint.atomic_torch_save, checkpoint.atomic_write_text = atomic_torch_save, atomic_write_text
elif moment == "start":
    act()
import train
sys.argv = ["train.py", *argv]
train.cli()
"""


def run_child(moment, action, folder, argv, env):
    return subprocess.run([sys.executable, "-c", CHILD.format(root=ROOT), moment, action, str(folder),
                           *map(str, argv)], cwd=ROOT, env=dict(os.environ, **env), capture_output=True, text=True,
                          timeout=300)


# ---- shared run material ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fs_faults")
    data = make_image_folder(tmp / "data")
    cfg = write_tiny_config(tmp / "cfg.yaml", tiny_clip(tmp), epochs=EPOCHS, batch=4)
    out = tmp / "reference"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TASKRES_FEATURE_CACHE", str(tmp / "ref_cache"))
        run_train(*args(data, cfg, out))
    return {"data": data, "cfg": cfg, "tmp": tmp, "accuracy": accuracies(out / "log.txt")[-1],
            "residual": residual(out)}


def args(data, cfg, out):
    return ["--root", data, "--seed", 1, "--trainer", "TaskRes", "--config-file", cfg, "--output-dir", out,
            "DATASET.NUM_SHOTS", 4, "TRAIN.RESUME_SAVE_SECONDS", 0]


def residual(out):
    path = os.path.join(str(out), "prompt_learner", f"model.pth.tar-{EPOCHS}")
    return torch.load(path, weights_only=False)["state_dict"]["text_feature_residuals"]


def same_as_reference(out, assets):
    assert accuracies(os.path.join(str(out), "log.txt"))[-1] == assets["accuracy"]
    assert torch.equal(residual(out), assets["residual"])


def one_sentence(proc, *, pattern):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "Logging error" not in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), proc.stderr
    assert re.search(pattern, proc.stderr), proc.stderr


def pointer(out):
    with open(os.path.join(str(out), "prompt_learner", "checkpoint")) as f:
        return f.read().strip()


# ---- the output folder -----------------------------------------------------------------------
FULL = r"No space left on device"
READ_ONLY = r"Read-only file system"


@pytest.mark.parametrize("action", ["full", "read-only"])
def test_output_folder_unusable_from_the_start(assets, tmp_path, tmpfs, action):
    out = os.path.join(tmpfs, "out")
    argv = args(assets["data"], assets["cfg"], out)
    env = {"TASKRES_FEATURE_CACHE": str(tmp_path / "cache")}
    if action == "read-only":
        os.makedirs(out)
        proc = run_child("start", action, out, argv, env)
    else:
        proc = run_child("start", action, tmpfs, argv, env)
    reason = FULL if action == "full" else READ_ONLY
    one_sentence(proc, pattern=rf"^error: Cannot write to the output folder {out} \({reason}\); ")
    undo(out if action == "read-only" else tmpfs)
    run_train(*argv)  # the same command, space back
    same_as_reference(out, assets)


@pytest.mark.parametrize("moment, action, where", [
    ("epoch4", "full", "out"),  # whatever write needs a page first: a log line, tensorboard, the checkpoint
    ("checkpoint4", "full", "out"),
    ("pointer4", "full", "out"),
    ("checkpoint4", "read-only", "ckpt"),  # the checkpoint folder turns read-only (log.txt stays open elsewhere)
])
def test_output_folder_filling_up_mid_run_loses_nothing_and_resumes(assets, tmp_path, tmpfs, moment, action, where):
    out = os.path.join(tmpfs, "out")
    ckpt = os.path.join(out, "prompt_learner")
    argv = args(assets["data"], assets["cfg"], out)
    target = tmpfs if where == "out" else ckpt
    proc = run_child(moment, action, target, argv, {"TASKRES_FEATURE_CACHE": str(tmp_path / "cache")})
    reason = FULL if action == "full" else READ_ONLY
    one_sentence(proc, pattern=rf"\({reason}\).*run the same command again to resume from the (last|previous) checkpoint\.$")
    assert str(out) in proc.stderr  # names the file or folder
    # nothing written before is lost: the log up to epoch 3, the last complete checkpoint and its pointer
    with open(os.path.join(out, "log.txt")) as f:
        assert "epoch [3/6] batch [3/3]" in f.read()
    assert pointer(out) == "model.pth.tar-3"
    assert torch.load(os.path.join(ckpt, "model.pth.tar-3"), weights_only=False)["epoch"] == 3
    assert not [n for n in os.listdir(ckpt) if n.endswith(".tmp")]
    undo(target)
    run_train(*argv)  # the same command, once space is back
    with open(os.path.join(out, "log.txt")) as f:
        assert "Previous epoch: 3" in f.read().split("new run in this folder")[-1]
    same_as_reference(out, assets)


# ---- the feature cache -----------------------------------------------------------------------
@pytest.mark.parametrize("action", ["full", "read-only"])
def test_cache_folder_full_or_read_only_warns_and_the_run_goes_on(assets, tmp_path, tmpfs, action):
    cache = os.path.join(tmpfs, "cache")
    os.makedirs(cache)
    out = tmp_path / "out"
    argv = args(assets["data"], assets["cfg"], out)
    proc = run_child("start", action, cache if action == "read-only" else tmpfs, argv,
                     {"TASKRES_FEATURE_CACHE": cache})
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    reason = FULL if action == "full" else READ_ONLY
    log = (out / "log.txt").read_text()
    assert re.search(rf"WARNING: Could not write the feature cache file {cache}/\S+ \({reason}\): this run goes on "
                     "with the features in memory", log)
    same_as_reference(out, assets)  # the same numbers as with a working cache
    undo(cache if action == "read-only" else tmpfs)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TASKRES_FEATURE_CACHE", cache)
        trainer = run_train(*args(assets["data"], assets["cfg"], tmp_path / "again"))
    assert trainer.feature_store.encoded > 0 and any(name.endswith(".pt") for _, _, files in os.walk(cache)
                                                      for name in files)


def test_a_read_only_warm_cache_is_read(assets, tmp_path, tmpfs, monkeypatch):
    """A colleague's cache, shared read-only: every feature is read from it, nothing encoded."""
    cache = os.path.join(tmpfs, "cache")
    monkeypatch.setenv("TASKRES_FEATURE_CACHE", cache)
    run_train(*args(assets["data"], assets["cfg"], tmp_path / "warm"))
    make_read_only(cache)
    trainer = run_train(*args(assets["data"], assets["cfg"], tmp_path / "out"))
    assert trainer.feature_store.encoded == 0
    same_as_reference(tmp_path / "out", assets)
    undo(cache)


# ---- the dataset folder (split and few-shot draw written there) ------------------------------
@pytest.mark.parametrize("action", ["full", "read-only"])
def test_dataset_folder_full_or_read_only_draws_in_memory(assets, tmp_path, tmpfs, action):
    data = os.path.join(tmpfs, "data")
    shutil.copytree(assets["data"], data)  # with its split file; the few-shot draw is not there yet
    shutil.rmtree(os.path.join(data, "split_fewshot"), ignore_errors=True)
    out = tmp_path / "out"
    argv = args(data, assets["cfg"], out)
    proc = run_child("start", action, data if action == "read-only" else tmpfs, argv,
                     {"TASKRES_FEATURE_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    log = (out / "log.txt").read_text()
    reason = FULL if action == "full" else READ_ONLY
    assert re.search(rf"WARNING: Could not write the few-shot cache {data}/split_fewshot/shot_4-seed_1.json "
                     rf"\(\[Errno \d+\] {reason}", log), log[-3000:]
    same_as_reference(out, assets)  # seeded: the same draw as the reference's
    undo(data if action == "read-only" else tmpfs)
    run_train(*args(data, assets["cfg"], tmp_path / "again"))
    assert os.path.exists(os.path.join(data, "split_fewshot", "shot_4-seed_1.json"))
