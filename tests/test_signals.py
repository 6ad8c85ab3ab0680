"""Ctrl-C and SIGTERM in the middle of training: train.py leaves a resumable checkpoint, says in one
line how to resume, and dies by that signal; the same command then ends as an uninterrupted run.

The child is train.py's cli (as a user runs it) with one step held until the test has sent its
signal, so the signal lands mid-epoch, mid-step, every time.
"""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from helpers import ROOT, accuracies, default_sigint, make_image_folder, run_train, tiny_clip, write_tiny_config

EPOCHS = 4  # 4 shots x 3 classes, batch 4: three steps per epoch

CHILD = r"""
import os, sys, time
sys.path.insert(0, {root!r})
folder, argv = sys.argv[1], sys.argv[2:]
from trainers.taskres import TaskRes
step = TaskRes.forward_backward
def forward_backward(self, batch):
    if (self.epoch, self.batch_idx) == (1, 1):  # epoch 2, its second step: say so, wait for "go"
        open(os.path.join(folder, "ready"), "w").close()
        deadline = time.time() + 120
        while not os.path.exists(os.path.join(folder, "go")) and time.time() < deadline:
            time.sleep(0.02)
    return step(self, batch)
TaskRes.forward_backward = forward_backward
import train
sys.argv = ["train.py", *argv]
train.cli()
"""


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("signals")
    data = make_image_folder(tmp / "data")
    cfg = write_tiny_config(tmp / "cfg.yaml", tiny_clip(tmp), epochs=EPOCHS, batch=4)
    os.environ["TASKRES_FEATURE_CACHE"] = str(tmp / "cache")
    ref = tmp / "reference"
    run_train(*args(data, cfg, ref))
    return {"data": data, "cfg": cfg, "ref": ref, "accuracy": accuracies(ref / "log.txt")[-1],
            "residual": residual(ref)}


def args(data, cfg, out):
    # the default TRAIN.RESUME_SAVE_SECONDS (60): no checkpoint before the last epoch but the one the stop leaves
    return ["--root", data, "--seed", 1, "--trainer", "TaskRes", "--config-file", cfg, "--output-dir", out,
            "DATASET.NUM_SHOTS", 4]


def residual(out):
    return torch.load(os.path.join(out, "prompt_learner", f"model.pth.tar-{EPOCHS}"),
                      weights_only=False)["state_dict"]["text_feature_residuals"]


def pointer(out):
    return (out / "prompt_learner" / "checkpoint").read_text().strip()


@pytest.mark.parametrize("signum, line", [
    (signal.SIGINT, "Interrupted (Ctrl-C): run the same command again to resume from epoch 1 ("),
    (signal.SIGTERM, "Stopped by SIGTERM: run the same command again to resume from epoch 1 ("),
], ids=["sigint", "sigterm"])
def test_a_signal_mid_epoch_leaves_a_checkpoint_and_the_run_resumes_to_the_same_result(assets, tmp_path, signum, line):
    out = tmp_path / "out"
    folder = tmp_path / "signals"
    folder.mkdir()
    argv = [str(a) for a in args(assets["data"], assets["cfg"], out)]
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(root=ROOT), str(folder), *argv], cwd=ROOT,
                             env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             preexec_fn=default_sigint)
    try:
        deadline = time.time() + 120
        while not (folder / "ready").exists():
            assert child.poll() is None, child.stderr.read()
            assert time.time() < deadline, "the child never reached epoch 2"
            time.sleep(0.02)
        child.send_signal(signum)
        time.sleep(0.2)  # SIGTERM: noted while the step waits; the step then finishes
        (folder / "go").touch()
        _, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signum, err  # died by the signal, not "exit 130"
    last = err.strip().splitlines()[-1]
    ckpt = out / "prompt_learner" / "model.pth.tar-1"
    assert last == f"{line}{ckpt}).", err
    assert "Traceback" not in err
    log = (out / "log.txt").read_text()
    name = signal.Signals(signum).name
    if signum == signal.SIGTERM:
        assert "Received SIGTERM: the current step finishes, then a resumable checkpoint is saved" in log
    assert f"Stopped by {'Ctrl-C' if signum == signal.SIGINT else name} in epoch 2 of 4 (its steps so far are dropped)" in log
    # the checkpoint left is epoch 1's state, although epoch 2 had taken steps
    assert pointer(out) == "model.pth.tar-1"
    kept = torch.load(ckpt, weights_only=False)
    assert kept["epoch"] == 1

    run_train(*args(assets["data"], assets["cfg"], out))  # the same command
    text = (out / "log.txt").read_text().split("new run in this folder")[-1]
    assert "Previous epoch: 1" in text and "epoch [2/4] batch [1/3]" in text
    assert torch.equal(residual(out), assets["residual"])
    assert accuracies(out / "log.txt")[-1] == assets["accuracy"]
    # the resume-only checkpoint went once the next one landed, as in a run never stopped
    assert sorted(os.listdir(out / "prompt_learner")) == sorted(os.listdir(assets["ref"] / "prompt_learner"))
