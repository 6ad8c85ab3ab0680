"""Mistakes in a command: each ends in one sentence naming the file, key or value and the fix,
exit code 2, and nothing of the run already in the output folder written over.

Most cases run ``train.cli()`` in this process (the real CLI path: argv, exit code, stderr);
two run ``train.py`` as a separate process, as a user would.
"""
import json
import os
import shutil
import sys

import pytest
import torch

import train
from dataset_replicas import build_replica
from helpers import (
    accuracies, copy_run, make_image_folder, run_train, run_train_subprocess, tiny_clip, write_tiny_config)

EPOCHS = 2


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    """Data, a tiny CLIP, a config and a finished run; each test gets a copy of the run's folder."""
    tmp = tmp_path_factory.mktemp("bad_input")
    data = make_image_folder(tmp / "data")
    cfg = write_tiny_config(tmp / "cfg.yaml", tiny_clip(tmp), epochs=EPOCHS)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TASKRES_FEATURE_CACHE", str(tmp / "cache"))
        run_train(*base(data, cfg, tmp / "run"))
    return {"data": data, "cfg": cfg, "run": tmp / "run", "clip": tiny_clip(tmp)}


def base(data, cfg, out, *flags, opts=()):
    return ["--root", data, "--seed", 1, "--trainer", "TaskRes", "--config-file", cfg, "--output-dir", out, *flags,
            "DATASET.NUM_SHOTS", 4, *opts]



def snapshot(folder):
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            if name != ".run.lock":  # holds the pid of the last run that took the folder
                with open(os.path.join(dirpath, name), "rb") as f:
                    out[os.path.relpath(os.path.join(dirpath, name), folder)] = f.read()
    return out


def cli(argv, monkeypatch, capsys):
    """train.py's CLI in this process: (exit code, stderr)."""
    from engine.utils import close_logger

    monkeypatch.setattr(sys, "argv", ["train.py", *map(str, argv)])
    try:
        with pytest.raises(SystemExit) as exc:
            train.cli()
    finally:
        close_logger()
    return exc.value.code, capsys.readouterr().err


def assert_one_sentence(err, pattern):
    import re

    assert err.startswith("error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert re.search(pattern, err), (pattern, err)


# ---- the table: (id, build the arguments, the sentence) --------------------------------------
# build(p, tmp) -> argv, where p is the prior fixture, tmp a fresh folder and out the run's folder.
def _yaml(tmp, text):
    path = tmp / "bad.yaml"
    path.write_text(text)
    return path


def _pets_without_split(tmp):
    root = tmp / "pets"
    build_replica("OxfordPets", root, with_split=False)
    os.remove(root / "oxford_pets" / "annotations" / "trainval.txt")  # nothing to generate it from either
    return root


def _enhanced_base(p, tmp):
    path = tmp / "strong_base.pth.tar"
    torch.save({"state_dict": {"weight": torch.zeros(3, 5)}, "epoch": 50}, path)
    return path


CASES = [
    ("unknown-key-opts", lambda p, tmp, out: base(p["data"], p["cfg"], out, opts=["OPTIM.LRR", 1]),
     r'Unknown config key "OPTIM.LRR" in the command-line opts. Did you mean "OPTIM.LR"\?'),
    ("unknown-key-file", lambda p, tmp, out: base(p["data"], p["cfg"], out, "--dataset-config-file",
                                                   _yaml(tmp, "OPTIM:\n  MAX_EPOK: 3\n")),
     r'Unknown config key "OPTIM.MAX_EPOK" in .*bad.yaml. Did you mean "OPTIM.MAX_EPOCH"\?'),
    ("wrong-type-opts", lambda p, tmp, out: base(p["data"], p["cfg"], out, opts=["OPTIM.MAX_EPOCH", "many"]),
     r"Wrong value type for config key OPTIM.MAX_EPOCH in the command-line opts: .*many.*give a value of the "
     r"same type as the default"),
    ("wrong-type-file", lambda p, tmp, out: base(p["data"], p["cfg"], out, "--dataset-config-file",
                                                  _yaml(tmp, "OPTIM:\n  LR: [1, 2]\n")),
     r"Wrong value type for config key OPTIM.LR in .*bad.yaml"),
    ("missing-config-file", lambda p, tmp, out: base(p["data"], tmp / "nope.yaml", out),
     r"Config file not found: .*nope.yaml; check the path given to --config-file"),
    ("unknown-trainer", lambda p, tmp, out: base(p["data"], p["cfg"], out, "--trainer", "TaskRess"),
     r'Unknown trainer "TaskRess". Did you mean "TaskRes"\? Valid names: .*StrongBase, TaskRes, .*ZeroshotCLIP'),
    ("unknown-dataset", lambda p, tmp, out: base(p["data"], p["cfg"], out, opts=["DATASET.NAME", "ImageFoldr"]),
     r'Unknown dataset "ImageFoldr". Did you mean "ImageFolder"\? Valid names: Caltech101, .*, UCF101'),
    ("unknown-backbone", lambda p, tmp, out: base(p["data"], p["cfg"], out, "--backbone", "RN5"),
     r"Unknown CLIP model 'RN5'; did you mean 'RN50'\? valid names are RN50, RN101"),
    ("missing-dataset-folder", lambda p, tmp, out: base(tmp / "nowhere", p["cfg"], out),
     r"ImageFolder: folder .*nowhere not found; set DATASET.ROOT \(--root\)"),
    ("missing-split-file", lambda p, tmp, out: base(_pets_without_split(tmp), p["cfg"], out,
                                                     opts=["DATASET.NAME", "OxfordPets"]),
     r"OxfordPets: neither the split file .*split_zhou_OxfordPets.json nor the .*trainval.txt exists"),
    ("missing-clip-weights-offline", lambda p, tmp, out: base(p["data"], p["cfg"], out, "--backbone", "RN50"),
     r"CLIP weights for RN50 not found at .*RN50.pt and could not be downloaded \(TASKRES_OFFLINE=1"),
    ("enhanced-base-wrong-shape", lambda p, tmp, out: base(p["data"], p["cfg"], out, "--enhanced-base",
                                                            _enhanced_base(p, tmp)),
     r"Enhanced base .*strong_base.pth.tar has a weight of shape \[3, 5\], but this backbone needs \[\d+, \d+\]"),
    ("eval-only-without-model-dir", lambda p, tmp, out: base(p["data"], p["cfg"], out, "--eval-only"),
     r"--eval-only needs --model-dir"),
    ("load-epoch-missing", lambda p, tmp, out: base(p["data"], p["cfg"], out, "--eval-only", "--model-dir", p["run"],
                                                     "--load-epoch", 7),
     rf'Model not found at ".*model.pth.tar-7" \(epochs saved there: {EPOCHS}\); check --model-dir and --load-epoch'),
    ("odd-opts", lambda p, tmp, out: base(p["data"], p["cfg"], out, opts=["OPTIM.LR"]),
     r"The KEY VALUE opts must come in pairs"),
]


@pytest.mark.parametrize("build, pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_sentence_and_overwrites_nothing(prior, tmp_path, monkeypatch, capsys, build, pattern):
    out = tmp_path / "out"
    copy_run(prior["run"], out)  # a finished run is in the folder the bad command names
    before = snapshot(out)
    code, err = cli(build(prior, tmp_path, out), monkeypatch, capsys)
    assert code == 2
    assert_one_sentence(err, pattern)
    after = snapshot(out)
    # every file of the earlier run is untouched; log.txt at most gains the failed attempt at its end
    assert {k: after.get(k) for k in before if k != "log.txt"} == {k: v for k, v in before.items() if k != "log.txt"}
    assert after["log.txt"].startswith(before["log.txt"])
    assert set(after) == set(before)
    if after["log.txt"] != before["log.txt"]:  # ... which ends with the same sentence
        assert after["log.txt"].decode().rstrip().endswith("ERROR: " + err.strip()[len("error: "):])


def test_checkpoint_of_another_class_count_names_the_file(prior, tmp_path, monkeypatch, capsys):
    four = make_image_folder(tmp_path / "four", ("a", "b", "c", "d"))
    model = os.path.join(str(prior["run"]), "prompt_learner", f"model.pth.tar-{EPOCHS}")
    # evaluating a 3-class checkpoint on a 4-class dataset
    code, err = cli(base(four, prior["cfg"], tmp_path / "eval", "--eval-only", "--model-dir", prior["run"],
                         "--load-epoch", EPOCHS), monkeypatch, capsys)
    assert code == 2
    assert_one_sentence(err, rf"Checkpoint {model} does not fit this model: .*torch.Size\(\[3, \d+\]\).*"
                             r"torch.Size\(\[4, \d+\]\).*trained on another dataset or backbone")
    # resuming a 3-class run with a 4-class dataset
    out = tmp_path / "out"
    copy_run(prior["run"], out)
    ckpts = {k: v for k, v in snapshot(out).items() if k.startswith("prompt_learner")}
    code, err = cli(base(four, prior["cfg"], out), monkeypatch, capsys)
    assert code == 2
    assert_one_sentence(err, r"Checkpoint .*model.pth.tar-2 does not fit this model .*use another --output-dir")
    assert {k: v for k, v in snapshot(out).items() if k.startswith("prompt_learner")} == ckpts


def test_more_shots_than_a_class_has_warns_with_the_count_used(prior, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(prior["data"], data)  # 10 images per class: 5 train, 2 val, 3 test
    expected = ("DATASET.NUM_SHOTS is 8 but 3 of 3 classes have fewer training images; "
                "used 5 for bird, 5 for cat, 5 for dog")
    for attempt in ("drawn", "cached"):  # said again when the few-shot sample comes from its cache
        out = tmp_path / attempt
        trainer = run_train("--root", data, "--seed", 1, "--trainer", "TaskRes", "--config-file", prior["cfg"],
                            "--output-dir", out, "DATASET.NUM_SHOTS", 8, "OPTIM.MAX_EPOCH", 1)
        assert expected in (out / "log.txt").read_text(), attempt
        assert len(trainer.dm.dataset.train_x) == 15
        assert len(accuracies(out / "log.txt")) == 1  # a warning, not an error: the run completes


def _corrupt_a_train_image(prior, tmp):
    data = tmp / "data"
    shutil.copytree(prior["data"], data)
    with open(data / "split_ImageFolder.json") as f:
        rel = json.load(f)["train"][0][0]
    bad = data / rel
    bad.write_bytes(b"not a jpeg at all")
    return data, bad


@pytest.mark.parametrize("workers", [0, 2])
def test_undecodable_image_is_named(prior, tmp_path, monkeypatch, capsys, workers):
    data, bad = _corrupt_a_train_image(prior, tmp_path)
    # NUM_SHOTS 16 takes every training image, the broken one included
    argv = base(data, prior["cfg"], tmp_path / "out", opts=["DATASET.NUM_SHOTS", 16, "DATALOADER.NUM_WORKERS", workers])
    code, err = cli(argv, monkeypatch, capsys)
    assert code == 2
    assert_one_sentence(err, rf"Cannot read image {bad} \(cannot identify image file .*\); "
                             r"the file is corrupt or not an image: replace or remove it.")
    assert bad.read_bytes() == b"not a jpeg at all"


# ---- as a separate process -------------------------------------------------------------------
def test_train_py_process_unknown_key(prior, tmp_path):
    out = tmp_path / "out"
    copy_run(prior["run"], out)
    before = snapshot(out)
    proc = run_train_subprocess(*base(prior["data"], prior["cfg"], out, opts=["OPTIM.LRR", 1]))
    assert proc.returncode == 2
    assert proc.stderr == 'error: Unknown config key "OPTIM.LRR" in the command-line opts. Did you mean "OPTIM.LR"?\n'
    assert snapshot(out) == before


def test_train_py_process_broken_image_read_by_a_worker(prior, tmp_path):
    data, bad = _corrupt_a_train_image(prior, tmp_path)
    proc = run_train_subprocess(*base(data, prior["cfg"], tmp_path / "out",
                                      opts=["DATASET.NUM_SHOTS", 16, "DATALOADER.NUM_WORKERS", 2]))
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ") or "Traceback" in line]
    assert lines == [lines[0]] and f"Cannot read image {bad}" in lines[0], proc.stderr[-2000:]
