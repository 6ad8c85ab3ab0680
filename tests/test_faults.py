"""Faults a long unattended run meets, each reproduced on the CPU with a tiny CLIP.

The matrix (docs/troubleshooting.md, "When something goes wrong"):
- SIGKILL in the middle of an epoch, of a checkpoint file write, of the pointer write: the
  identical command resumes from the last complete checkpoint and ends with the accuracy and
  residual of an uninterrupted run;
- a truncated / corrupt checkpoint is named and never skipped; a corrupt feature-cache bundle or
  few-shot split is named and rebuilt; a corrupt dataset split file is named and left alone;
- two runs into one output folder: the second is refused, naming the folder, and changes nothing;
- an output folder that is not writable, a disk that fills while saving: one sentence, the
  previous checkpoint and its pointer intact, the next run resumes;
- NaN / inf loss: stops naming the epoch and batch, the last good checkpoint kept;
- CUDA out of memory while encoding features: the batch is split and retried, with a warning.
"""
import errno
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from engine.errors import CheckpointError, DataError, UserError
from helpers import ROOT, accuracies, copy_run, make_image_folder, run_train, tiny_clip, write_tiny_config

EPOCHS = 6
# 4 shots x 3 classes with batch 4: three batches per epoch, so "mid-epoch" exists
BATCH = 4


# ---- shared run material ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A tiny image folder, a tiny CLIP, a config, and the result of one uninterrupted run.

    Augmentation is seeded by the image path, so every run compared with the reference uses
    this same data folder.
    """
    tmp = tmp_path_factory.mktemp("faults")
    data = make_image_folder(tmp / "data")
    cfg = write_tiny_config(tmp / "cfg.yaml", tiny_clip(tmp), epochs=EPOCHS, batch=BATCH)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TASKRES_FEATURE_CACHE", str(tmp / "ref_cache"))
        ref_out = tmp / "reference"
        run_train(*args(data, cfg, ref_out))
    ref = {
        "data": data, "cfg": cfg, "out": ref_out,
        "accuracy": accuracies(ref_out / "log.txt")[-1],
        "residual": final_residual(ref_out),
    }
    return ref


def args(data, cfg, out, *flags):
    """The command under test; RESUME_SAVE_SECONDS 0 writes a resume checkpoint every epoch."""
    return ["--root", data, "--seed", 1, "--trainer", "TaskRes", "--config-file", cfg, "--output-dir", out, *flags,
            "DATASET.NUM_SHOTS", 4, "TRAIN.RESUME_SAVE_SECONDS", 0]


def ckpt_dir(out):
    return os.path.join(str(out), "prompt_learner")


def pointer(out):
    with open(os.path.join(ckpt_dir(out), "checkpoint")) as f:
        return f.read().strip()


def load(out, name):
    return torch.load(os.path.join(ckpt_dir(out), name), map_location="cpu", weights_only=False)


def final_residual(out):
    return load(out, f"model.pth.tar-{EPOCHS}")["state_dict"]["text_feature_residuals"]


def newest_log(out):
    """The text the latest run wrote: log.txt after its last separator (each run appends there)."""
    assert [p for p in os.listdir(out) if p.startswith("log.txt")] == ["log.txt"]
    with open(os.path.join(str(out), "log.txt")) as f:
        return f.read().split("new run in this folder")[-1]


def accuracies_in(text):
    return [float(x) for x in re.findall(r"\* accuracy: ([\d.]+)%", text)]


def assert_same_as_reference(out, assets):
    """The resumed run ends where the uninterrupted one ended: accuracy and residual."""
    assert accuracies_in(newest_log(out))[-1] == assets["accuracy"]
    assert torch.equal(final_residual(out), assets["residual"])



def snapshot(folder, skip=(".run.lock",)):
    """Every file under ``folder`` with its bytes (the lock file holds a pid and is skipped)."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            if name in skip:
                continue
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


# ---- SIGKILL ---------------------------------------------------------------------------------
# A child process runs train.main with one function wrapped so that it SIGKILLs itself at a
# fixed point: deterministic, and as abrupt as the OOM killer or a pre-empted node.
CHILD = r"""
import io, os, signal, sys, time
sys.path.insert(0, {root!r})
mode, when, argv = sys.argv[1], sys.argv[2], sys.argv[3:]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if mode == "batch":  # when = "E/B": die before batch B of epoch E (1-based) runs
    from trainers.taskres import TaskRes
    epoch, batch = map(int, when.split("/"))
    step = TaskRes.forward_backward
    def forward_backward(self, b):
        if (self.epoch + 1, self.batch_idx + 1) == (epoch, batch):
            die()
        return step(self, b)
    TaskRes.forward_backward = forward_backward

elif mode in ("file", "pointer"):  # die half-way through writing checkpoint `when` (or its pointer)
    import torch
    from engine.utils import checkpoint, io as uio
    save_file, save_text = checkpoint.atomic_torch_save, checkpoint.atomic_write_text
    def half_then_die(data):
        def write(f):
            f.write(data[: len(data) // 2])
            f.flush()
            die()
        return write
    def atomic_torch_save(obj, path):
        if mode == "file" and os.path.basename(path) == when:
            buf = io.BytesIO()
            torch.save(obj, buf)
            uio._atomic(path, half_then_die(buf.getvalue()))
        return save_file(obj, path)
    def atomic_write_text(path, text):
        if mode == "pointer" and text.strip() == when:
            uio._atomic(path, half_then_die(text.encode()))
        return save_text(path, text)
    checkpoint.atomic_torch_save = atomic_torch_save
    checkpoint.atomic_write_text = atomic_write_text

elif mode == "hold":  # when = a folder: at epoch 2 say "ready" there, then wait for "go"
    from trainers.taskres import TaskRes
    step = TaskRes.forward_backward
    def forward_backward(self, b):
        if (self.epoch, self.batch_idx) == (1, 0):
            open(os.path.join(when, "ready"), "w").close()
            deadline = time.time() + 120
            while not os.path.exists(os.path.join(when, "go")) and time.time() < deadline:
                time.sleep(0.05)
        return step(self, b)
    TaskRes.forward_backward = forward_backward

import train
train.main(argv)
"""


def start_child(mode, when, argv):
    code = CHILD.format(root=ROOT)
    return subprocess.Popen([sys.executable, "-c", code, mode, str(when), *map(str, argv)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def run_child(mode, when, argv):
    proc = start_child(mode, when, argv)
    _, err = proc.communicate(timeout=180)
    return proc.returncode, err


@pytest.mark.parametrize("mode, when, kept", [
    ("batch", "3/2", "model.pth.tar-2"),  # killed between batches 1 and 2 of epoch 3
    ("file", "model.pth.tar-3", "model.pth.tar-2"),  # killed with half of epoch 3's checkpoint written
    ("pointer", "model.pth.tar-3", "model.pth.tar-2"),  # checkpoint 3 complete, pointer half written
])
def test_sigkill_then_the_same_command_resumes_to_the_same_result(assets, tmp_path, mode, when, kept):
    out = tmp_path / "out"
    argv = args(assets["data"], assets["cfg"], out)
    rc, err = run_child(mode, when, argv)
    assert rc == -signal.SIGKILL, err
    # what the kill left: the last complete checkpoint, named by an intact pointer
    assert pointer(out) == kept
    assert load(out, kept)["epoch"] == 2
    half_written = [p for p in os.listdir(ckpt_dir(out)) if p.endswith(".tmp")]
    assert len(half_written) == (0 if mode == "batch" else 1)

    run_train(*argv)  # the identical command

    text = newest_log(out)
    assert "Previous epoch: 2" in text and "epoch [3/6] batch [1/3]" in text and "epoch [2/6]" not in text
    if mode != "batch":
        assert "Removing a half-written file left by an interrupted run" in text
    assert not [p for p in os.listdir(ckpt_dir(out)) if p.endswith(".tmp")]
    assert pointer(out) == f"model.pth.tar-{EPOCHS}"
    # the resume-only checkpoint it started from went once the next one landed, as in a run never killed
    assert sorted(os.listdir(ckpt_dir(out))) == sorted(os.listdir(ckpt_dir(assets["out"])))
    assert_same_as_reference(out, assets)


# ---- corrupt files ---------------------------------------------------------------------------
def _truncate(path):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


def _garbage(path, seed=0):
    with open(path, "wb") as f:
        f.write(random.Random(seed).randbytes(300))


# every exception type unpickling damaged bytes is known to raise (which one a given payload raises
# depends on the torch version, so the types are raised directly, and garbage is checked separately)
UNPICKLING_ERRORS = ["UnpicklingError", "OverflowError", "ValueError", "UnicodeDecodeError", "MemoryError",
                     "RuntimeError", "TypeError", "EOFError", "BadZipFile", "KeyError", "IndexError", "AttributeError",
                     "OSError"]


def _exception(name):
    import pickle
    import zipfile

    for module in (__builtins__ if isinstance(__builtins__, dict) else vars(__builtins__), vars(pickle), vars(zipfile)):
        if name in module:
            cls = module[name]
            return cls("utf-8", b"x", 0, 1, "bad") if cls is UnicodeDecodeError else cls("damaged")
    raise AssertionError(name)


def _empty(path):
    open(path, "wb").close()


@pytest.mark.parametrize("damage", [_truncate, _garbage, _empty], ids=["truncated", "garbage", "empty"])
def test_corrupt_checkpoint_is_named_and_never_skipped(assets, tmp_path, damage):
    out = tmp_path / "out"
    copy_run(assets["out"], out)
    bad = os.path.join(ckpt_dir(out), f"model.pth.tar-{EPOCHS}")
    damage(bad)
    before = snapshot(out)
    # resuming: the pointer names the damaged file
    with pytest.raises(CheckpointError, match=f"Checkpoint {bad} is truncated or corrupt"):
        run_train(*args(assets["data"], assets["cfg"], out))
    # evaluating it
    with pytest.raises(CheckpointError, match=f"Checkpoint {bad} is truncated or corrupt"):
        run_train(*args(assets["data"], assets["cfg"], tmp_path / "eval", "--eval-only", "--model-dir", out,
                        "--load-epoch", EPOCHS))
    after = snapshot(out)
    # nothing of the run was rewritten; log.txt only gained the failed attempts at its end
    assert {k: v for k, v in after.items() if k in before and k != "log.txt"} == \
        {k: v for k, v in before.items() if k != "log.txt"}
    assert after["log.txt"].startswith(before["log.txt"])


@pytest.mark.parametrize("error", UNPICKLING_ERRORS)
def test_each_unpickling_error_is_a_checkpoint_error(tmp_path, monkeypatch, error):
    from engine.utils import checkpoint

    path = str(tmp_path / "model.pth.tar-1")
    _garbage(path)
    raised = _exception(error)

    def damaged_load(*args, **kwargs):
        raise raised

    monkeypatch.setattr(checkpoint.torch, "load", damaged_load)
    with pytest.raises(CheckpointError, match=f"Checkpoint {path} is truncated or corrupt") as info:
        checkpoint.load_checkpoint(path)
    assert info.value.__cause__ is raised


def test_a_checkpoint_cut_at_any_length_is_a_checkpoint_error(assets, tmp_path):
    """Cut short (a full disk, a copy that stopped): torch.load raises ValueError, RuntimeError, EOFError
    or, seeking back from the end of a real file, OSError (Invalid argument)."""
    from engine.utils.checkpoint import load_checkpoint

    with open(os.path.join(ckpt_dir(assets["out"]), f"model.pth.tar-{EPOCHS}"), "rb") as f:
        data = f.read()
    path = str(tmp_path / "model.pth.tar-1")
    for length in range(0, len(data), max(1, len(data) // 40)):
        with open(path, "wb") as f:
            f.write(data[:length])
        with pytest.raises(CheckpointError, match=f"Checkpoint {path} (is truncated or corrupt|fails its checksum)"):
            load_checkpoint(path)


@pytest.mark.parametrize("seed", range(12))
def test_any_garbage_in_a_checkpoint_is_a_checkpoint_error(tmp_path, seed):
    from engine.utils.checkpoint import load_checkpoint

    path = str(tmp_path / "model.pth.tar-1")
    _garbage(path, seed)
    with pytest.raises(CheckpointError, match=f"Checkpoint {path} is truncated or corrupt"):
        load_checkpoint(path)


def test_pointer_to_a_missing_or_no_file_is_named(assets, tmp_path):
    out = tmp_path / "out"
    copy_run(assets["out"], out)
    pointer_file = os.path.join(ckpt_dir(out), "checkpoint")
    with open(pointer_file, "w") as f:
        f.write("model.pth.tar-4\n")
    with pytest.raises(CheckpointError, match="Checkpoint not found at .*model.pth.tar-4"):
        run_train(*args(assets["data"], assets["cfg"], out))
    open(pointer_file, "w").close()
    with pytest.raises(CheckpointError, match=f"{pointer_file} is empty"):
        run_train(*args(assets["data"], assets["cfg"], out))
    assert load(out, f"model.pth.tar-{EPOCHS}")["epoch"] == EPOCHS


@pytest.mark.parametrize("damage", [_truncate, _garbage, _empty], ids=["truncated", "garbage", "empty"])
def test_corrupt_feature_cache_bundle_is_named_and_rebuilt(tmp_path, caplog, damage):
    from engine.data.datasets import Datum
    from engine.features import FeatureStore

    folder = make_image_folder(tmp_path / "imgs", classes=("a",), per_class=3)
    items = [Datum(os.path.join(folder, "a", f"{i}.jpg"), 0) for i in range(3)]
    calls = []

    def encode(images):
        calls.append(images.shape[0])
        return images.flatten(1)[:, :5] * 2

    from torchvision import transforms as T

    tfm = T.Compose([T.Resize(8), T.CenterCrop(8), T.ToTensor()])
    store = FeatureStore(str(tmp_path / "cache"))

    def features():
        return store.features(encode, items, tfm, "enc", "tfm", "g/test", ["test"], is_train=False, dtype=torch.float32)

    first = features()
    path = store.bundle_path("enc", "tfm", "test", "g/test")
    damage(path)
    with caplog.at_level(logging.WARNING, logger="engine.features"):
        again = features()
    assert f"Feature cache file {path} is corrupt" in caplog.text and "rebuilding it" in caplog.text
    assert torch.equal(first, again) and sum(calls) == 6  # encoded again, same values
    third = features()
    assert torch.equal(first, third) and sum(calls) == 6  # the rebuilt bundle is read back


def _fewshot_cfg(root):
    import trainers
    from engine.config import get_cfg_default

    cfg = trainers.extend_cfg(get_cfg_default())
    cfg.DATASET.NAME = "ImageFolder"
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NUM_SHOTS = 2
    cfg.SEED = 1
    return cfg


@pytest.mark.parametrize("damage", [_truncate, _garbage, _empty], ids=["truncated", "garbage", "empty"])
def test_corrupt_few_shot_split_is_named_and_drawn_again(tmp_path, caplog, damage):
    import datasets  # noqa: F401  (registers ImageFolder)
    from engine.data.datasets import build_dataset

    root = make_image_folder(tmp_path / "data")
    first = build_dataset(_fewshot_cfg(root)).train_x
    path = os.path.join(root, "split_fewshot", "shot_2-seed_1.json")
    damage(path)
    with caplog.at_level(logging.WARNING):
        again = build_dataset(_fewshot_cfg(root)).train_x
    assert f"Few-shot cache {path} is corrupt" in caplog.text
    assert os.path.exists(path + ".corrupt")  # kept for inspection, not deleted
    assert [(d.impath, d.label) for d in again] == [(d.impath, d.label) for d in first]  # seeded: same draw
    assert build_dataset(_fewshot_cfg(root)).train_x == again  # the rewritten file reads back


def test_corrupt_dataset_split_file_is_named_and_left_alone(tmp_path):
    import datasets  # noqa: F401
    from engine.data.datasets import build_dataset

    root = make_image_folder(tmp_path / "data")
    build_dataset(_fewshot_cfg(root))
    split = os.path.join(root, "split_ImageFolder.json")
    _truncate(split)
    damaged = open(split, "rb").read()
    with pytest.raises(DataError, match=f"{split} is not valid JSON"):
        build_dataset(_fewshot_cfg(root))
    assert open(split, "rb").read() == damaged  # a published split is the user's: never regenerated silently


# ---- two runs, one folder --------------------------------------------------------------------
def test_second_run_into_a_busy_output_folder_is_refused_and_changes_nothing(assets, tmp_path, monkeypatch, capsys):
    import train

    out = tmp_path / "out"
    signals = tmp_path / "signals"
    signals.mkdir()
    argv = args(assets["data"], assets["cfg"], out)
    first = start_child("hold", signals, argv)
    try:
        deadline = time.time() + 120
        while not (signals / "ready").exists():
            assert first.poll() is None, first.stderr.read()
            assert time.time() < deadline, "the first run never reached epoch 2"
            time.sleep(0.05)
        before = snapshot(out)
        with pytest.raises(UserError, match=f"is using the output folder {out}; wait for it to finish or pass a "
                                            "different --output-dir"):
            run_train(*argv)
        # the same through the CLI: exit code 2 and one sentence
        monkeypatch.setattr(sys, "argv", ["train.py", *map(str, argv)])
        with pytest.raises(SystemExit) as exc:
            train.cli()
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: Another run (pid ") and str(out) in err and err.count("\n") == 1
        assert snapshot(out) == before  # the refused run wrote nothing, not even a log
    finally:
        (signals / "go").touch()
        _, err = first.communicate(timeout=180)
    assert first.returncode == 0, err
    assert [p for p in os.listdir(out) if p.startswith("log.txt")] == ["log.txt"]
    assert_same_as_reference(out, assets)  # the first run was not disturbed
    run_train(*argv)  # the lock went with the first process: the folder is usable again


# ---- not writable, disk full -----------------------------------------------------------------
def _inside(path, folder):
    path = os.path.abspath(os.fspath(path))
    return path == folder or path.startswith(folder + os.sep)


def make_read_only(folder, monkeypatch):
    """Make ``folder`` refuse new files. As root (which ignores modes) the refusal is simulated
    at the system calls a writer uses; otherwise the folder's mode is really set to r-x."""
    folder = os.path.abspath(str(folder))
    if os.geteuid() != 0:
        os.chmod(folder, 0o555)
        return lambda: os.chmod(folder, 0o755)

    def denied(path):
        return PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))

    real_os_open, real_open = os.open, open
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def os_open(path, flags, *a, **k):
        if flags & write_flags and _inside(path, folder):
            raise denied(path)
        return real_os_open(path, flags, *a, **k)

    def builtin_open(file, mode="r", *a, **k):
        if isinstance(file, (str, bytes, os.PathLike)) and set(mode) & set("wax+") and _inside(file, folder):
            raise denied(file)
        return real_open(file, mode, *a, **k)

    def refuse(real):
        def call(*paths, **k):
            for p in paths[:2]:
                if isinstance(p, (str, os.PathLike)) and _inside(p, folder) and os.path.abspath(p) != folder:
                    raise denied(p)
            return real(*paths, **k)
        return call

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr("builtins.open", builtin_open)
    for name in ("mkdir", "replace", "rename", "remove", "unlink"):
        monkeypatch.setattr(os, name, refuse(getattr(os, name)))
    return lambda: None


def test_read_only_output_folder_is_one_sentence(assets, tmp_path, monkeypatch, capsys):
    import train

    out = tmp_path / "out"
    out.mkdir()
    restore = make_read_only(out, monkeypatch)
    try:
        monkeypatch.setattr(sys, "argv", ["train.py", *map(str, args(assets["data"], assets["cfg"], out))])
        with pytest.raises(SystemExit) as exc:
            train.cli()
    finally:
        restore()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: Cannot write to the output folder {out}") and err.count("\n") == 1
    assert "Traceback" not in err


def _hook_before_epoch(monkeypatch, epoch, action):
    """Run ``action(trainer)`` as 1-based ``epoch`` starts (after the previous epoch's checkpoint)."""
    from trainers.taskres import TaskRes

    real = TaskRes.before_epoch

    def before_epoch(self):
        if self.epoch + 1 == epoch:
            action(self)
        return real(self)

    monkeypatch.setattr(TaskRes, "before_epoch", before_epoch)


def _check_intact_then_resume(out, assets, argv):
    names = sorted(os.listdir(ckpt_dir(out)))
    assert not [n for n in names if n.endswith(".tmp")], names  # no half-written file left behind
    assert pointer(out) == "model.pth.tar-3"
    assert load(out, "model.pth.tar-3")["epoch"] == 3  # the previous checkpoint loads
    run_train(*argv)
    assert "Previous epoch: 3" in newest_log(out)
    assert_same_as_reference(out, assets)


def test_checkpoint_folder_turning_read_only_keeps_the_previous_checkpoint(assets, tmp_path, monkeypatch):
    out = tmp_path / "out"
    argv = args(assets["data"], assets["cfg"], out)
    restore = []
    with monkeypatch.context() as mp:
        _hook_before_epoch(mp, 4, lambda trainer: restore.append(make_read_only(ckpt_dir(out), mp)))
        with pytest.raises(CheckpointError) as info:
            run_train(*argv)
        restore[0]()
    message = str(info.value)
    assert f"Could not write checkpoint {ckpt_dir(out)}/model.pth.tar-4 (Permission denied)" in message
    assert "run the same command again to resume" in message
    _check_intact_then_resume(out, assets, argv)


@pytest.mark.parametrize("target", ["file", "pointer"])
def test_disk_full_while_saving_keeps_the_previous_checkpoint(assets, tmp_path, monkeypatch, target):
    from engine.utils import io as uio

    out = tmp_path / "out"
    argv = args(assets["data"], assets["cfg"], out)
    real_atomic = uio._atomic

    def fills_up(path, write):
        name, folder = os.path.basename(path), os.path.dirname(path)
        full = (name == "model.pth.tar-4") if target == "file" else (
            name == "checkpoint" and os.path.exists(os.path.join(folder, "model.pth.tar-4")))
        if not full:
            return real_atomic(path, write)

        def partial(f):
            f.write(b"PK\x03\x04 a few bytes made it to the disk")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_atomic(path, partial)

    with monkeypatch.context() as mp:
        mp.setattr(uio, "_atomic", fills_up)
        with pytest.raises(CheckpointError, match=r"Could not write checkpoint .*model.pth.tar-4 \(No space left on "
                                                  r"device\); free space or fix permissions in"):
            run_train(*argv)
    _check_intact_then_resume(out, assets, argv)


# ---- NaN / inf -------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_nan_or_inf_loss_stops_naming_epoch_and_batch(assets, tmp_path, monkeypatch, bad):
    import torch.nn.functional as F

    out = tmp_path / "out"
    real = F.cross_entropy
    calls = []

    def cross_entropy(*a, **k):
        calls.append(1)
        loss = real(*a, **k)
        return loss + bad if len(calls) == 8 else loss  # call 8 = epoch 3, batch 2

    monkeypatch.setattr(F, "cross_entropy", cross_entropy)
    with pytest.raises(UserError) as info:
        run_train(*args(assets["data"], assets["cfg"], out))
    message = str(info.value)
    assert isinstance(info.value, FloatingPointError)
    assert f"Loss is {bad} at epoch 3 batch 2" in message
    assert os.path.join(ckpt_dir(out), "model.pth.tar-2") in message  # names the checkpoint that was kept
    assert pointer(out) == "model.pth.tar-2"
    kept = load(out, "model.pth.tar-2")
    assert kept["epoch"] == 2 and torch.isfinite(kept["state_dict"]["text_feature_residuals"]).all()
    assert not os.path.exists(os.path.join(ckpt_dir(out), "model.pth.tar-3"))


def test_nan_before_any_checkpoint_says_none_was_saved(assets, tmp_path, monkeypatch):
    import torch.nn.functional as F

    real = F.cross_entropy
    monkeypatch.setattr(F, "cross_entropy", lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.raises(UserError, match="Loss is nan at epoch 1 batch 1; no checkpoint was saved yet"):
        run_train(*args(assets["data"], assets["cfg"], tmp_path / "out"))


# ---- CUDA out of memory while encoding -------------------------------------------------------
def _oom_encoder(limit, calls):
    def encode(images):
        calls.append(images.shape[0])
        if images.shape[0] > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return images.flatten(1)[:, :4] * 3 + 1
    return encode


def test_oom_while_encoding_splits_the_batch_and_warns(caplog):
    from engine.features import _split_on_oom

    images = torch.arange(7 * 3 * 2 * 2, dtype=torch.float32).reshape(7, 3, 2, 2)
    calls = []
    with caplog.at_level(logging.WARNING, logger="engine.features"):
        out = _split_on_oom(_oom_encoder(2, calls), images)
    assert torch.equal(out, images.flatten(1)[:, :4] * 3 + 1)  # same rows, same order
    assert max(c for c in calls if c <= 2) <= 2 and calls[0] == 7
    assert "CUDA out of memory encoding 7 images: splitting the batch in two and retrying" in caplog.text
    # a single image that does not fit is a real error, not an endless split
    with pytest.raises(torch.cuda.OutOfMemoryError):
        _split_on_oom(_oom_encoder(0, []), images[:1])


def test_oom_in_the_feature_store_gives_the_same_features(tmp_path, caplog):
    from torchvision import transforms as T

    from engine.data.datasets import Datum
    from engine.features import FeatureStore

    folder = make_image_folder(tmp_path / "imgs", classes=("a", "b"), per_class=5)
    items = [Datum(os.path.join(folder, c, f"{i}.jpg"), k) for k, c in enumerate("ab") for i in range(5)]
    tfm = T.Compose([T.Resize(8), T.CenterCrop(8), T.ToTensor()])

    def features(limit, root):
        store = FeatureStore(str(tmp_path / root))
        return store.features(_oom_encoder(limit, []), items, tfm, "enc", "tfm", "g/test", ["test"],
                              batch_size=8, is_train=False, dtype=torch.float32)

    with caplog.at_level(logging.WARNING, logger="engine.features"):
        split = features(3, "c1")
    assert torch.equal(split, features(100, "c2"))
    assert caplog.text.count("CUDA out of memory encoding") >= 2  # 8 -> 4+4 -> 2+2+2+2


# ---- an image gone after the dataset was read --------------------------------------------------
def test_a_few_shot_image_deleted_after_the_draw_is_named(assets, tmp_path, monkeypatch):
    from engine.features import FeatureSource

    data = tmp_path / "data"
    shutil.copytree(assets["data"], data)
    real = FeatureSource.features
    gone = []

    def features(self, split, *a, **k):  # the image goes between reading the dataset and encoding it
        if split == "train" and not gone:
            gone.append(self.splits["train"][0].impath)
            os.remove(gone[0])
        return real(self, split, *a, **k)

    monkeypatch.setattr(FeatureSource, "features", features)
    with pytest.raises(DataError) as info:
        run_train(*args(data, assets["cfg"], tmp_path / "out"))
    message = str(info.value)
    assert message.startswith(f"Image {gone[0]} is missing (it was there when the dataset was read); restore it")
    assert "\n" not in message


def test_tensorboard_failing_to_write_is_one_sentence(assets, tmp_path, monkeypatch):
    """The event file is written by tensorboard's thread; its error (here: a full disk) comes back at
    the next call and is said naming the folder, the checkpoints before it kept."""
    from torch.utils.tensorboard import SummaryWriter

    calls = []
    real = SummaryWriter.add_scalar

    def add_scalar(self, *a, **k):
        calls.append(1)
        if len(calls) == 20:  # in epoch 3 or so
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, *a, **k)

    monkeypatch.setattr(SummaryWriter, "add_scalar", add_scalar)
    out = tmp_path / "out"
    with pytest.raises(UserError) as info:
        run_train(*args(assets["data"], assets["cfg"], out))
    assert str(info.value) == (f"Cannot write the tensorboard log in {out}/tensorboard (No space left on device); free "
                               "space there or make it writable, then run the same command again to resume from the "
                               "last checkpoint.")
    kept = load(out, pointer(out))["epoch"]
    assert kept >= 1
    monkeypatch.setattr(SummaryWriter, "add_scalar", real)
    run_train(*args(assets["data"], assets["cfg"], out))
    assert f"Previous epoch: {kept}" in newest_log(out)
    assert_same_as_reference(out, assets)


@pytest.mark.parametrize("code, sentence", [
    (errno.ENOSPC, "Cannot write {path} (No space left on device); free space there or make it writable, then run "
                   "the same command again to resume from the last checkpoint."),
    (errno.EACCES, "Cannot access {path} (Permission denied); fix its permissions, then run the same command again "
                   "(a training run resumes from its last checkpoint)."),
])
def test_any_other_file_that_cannot_be_written_is_one_sentence(assets, tmp_path, monkeypatch, capsys, code, sentence):
    """A write no code of ours wraps (here config.yaml, failing as a library's file would) still ends in one
    sentence naming the file, not a traceback."""
    import train

    out = tmp_path / "out"
    path = str(out / "config.yaml")

    def save_config(cfg):
        raise OSError(code, os.strerror(code), path)

    from engine import launch  # train.main is launch.main: its save_config is the one called

    monkeypatch.setattr(launch, "save_config", save_config)
    monkeypatch.setattr(train, "install_stop_handler", lambda: None)  # not in the test process
    monkeypatch.setattr(sys, "argv", ["train.py", *map(str, args(assets["data"], assets["cfg"], out))])
    with pytest.raises(SystemExit) as exc:
        train.cli()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err == f"error: {sentence.format(path=path)}\n"
