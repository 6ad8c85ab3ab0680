"""A method outside the checkout takes part in the whole product from one folder (issue 17,
item 3): the ``RowTuning`` example of FrozenCLIPTrainer's docstring as ``<tmp>/methods/row_tuning.py``
with ``<tmp>/methods/configs/RowTuning/tiny.yaml`` beside it, and no file of the checkout edited,
runs through train.py (``--trainer-dir`` and ``$TASKRES_TRAINER_DIRS``), compare.sh ``--methods
RowTuning``, scripts/summarize.py (its row in the tables, its curve in the figure, read from
run.json) and torchrun extraction (engine/distributed.py sets up as train.py does)."""
import json
import os
import textwrap
import subprocess
import sys

import pytest

from helpers import ROOT, make_image_folder, tiny_clip, write_tiny_config

def docstring_example():
    """The method code of FrozenCLIPTrainer's docstring, as it stands there (dedented)."""
    from trainers.clip_trainer import FrozenCLIPTrainer

    doc = FrozenCLIPTrainer.__doc__
    block = doc.split("before the head)::", 1)[1].split("\n    with its config group", 1)[0]
    return textwrap.dedent(block).strip() + "\n"


ROW_TUNING = '''
"""RowTuning: the zero-shot classifier rows, tuned (FrozenCLIPTrainer's docstring example)."""
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from engine import TRAINER_REGISTRY
from engine.metrics import compute_accuracy
from trainers.clip_trainer import FrozenCLIPTrainer, cosine_logits
from trainers.text_features import prompt_features


def extend_cfg(cfg):
    cfg.TRAINER.RowTuning = CN()
    cfg.TRAINER.RowTuning.PREC = "fp32"


''' + docstring_example()


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("outside")
    methods = tmp / "methods"
    (methods / "configs" / "RowTuning").mkdir(parents=True)
    (methods / "row_tuning.py").write_text(ROW_TUNING)
    clip_file = tiny_clip(tmp)
    write_tiny_config(methods / "configs" / "RowTuning" / "tiny.yaml", clip_file, epochs=2, batch=4)
    data = make_image_folder(tmp / "data", per_class=6)
    return tmp, methods, clip_file, data


def env_for(tmp, **extra):
    env = {k: v for k, v in os.environ.items() if k not in ("DATA", "OUTPUT", "PYTHON", "TASKRES_TRAINER_DIRS")}
    env.update(PYTHON=sys.executable, TR_RUNNER_PYTHON=sys.executable, TASKRES_FEATURE_CACHE=str(tmp / "cache"),
               OMP_NUM_THREADS="1", **extra)
    return env


def test_checkout_is_untouched_by_the_method(outside):
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                            capture_output=True, text=True).stdout
    assert "row_tuning" not in status and "RowTuning" not in status


def test_train_py_runs_it_from_the_env_folder_and_writes_run_json(outside):
    tmp, methods, clip_file, data = outside
    out = tmp / "direct"
    proc = subprocess.run([sys.executable, "train.py", "--root", data, "--seed", "1", "--trainer", "RowTuning",
                           "--config-file", str(methods / "configs" / "RowTuning" / "tiny.yaml"),
                           "--dataset-config-file", "configs/datasets/image_folder.yaml",
                           "--output-dir", str(out), "DATASET.NUM_SHOTS", "2"],
                          cwd=ROOT, env=env_for(tmp, TASKRES_TRAINER_DIRS=str(methods)), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((out / "run.json").read_text())
    assert (record["trainer"], record["method"], record["label"], record["status"]) == (
        "RowTuning", "RowTuning", "RowTuning", "finished")
    assert record["shots"] == 2 and record["seed"] == 1 and record["dataset_config"] == "image_folder"
    import hashlib
    assert record["weights_sha256"] == hashlib.sha256(open(clip_file, "rb").read()).hexdigest()
    assert record["results"]["test"]["accuracy"] == json.loads((out / "results_test.json").read_text())["accuracy"]
    assert record["wall_s"] > 0 and record["end"] and record["torch"] and record["device"] == "cpu"
    assert record["standard"] is True  # Protocol(): the folder's only yaml is its published config


def test_compare_summary_and_figure_take_it_in(outside):
    tmp, methods, clip_file, data = outside
    out = tmp / "cmp"
    args = ["--methods", "RowTuning", "--datasets", "image_folder", "--shots", "1 2", "--seeds", "1 2",
            "--backbone", clip_file, "--root", data, "--output", str(out), "--trainer-dir", str(methods)]
    dry = subprocess.run(["bash", "compare.sh", "--dry-run", *args], cwd=ROOT, env=env_for(tmp),
                         capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr
    assert len(dry.stdout.splitlines()) == 4 and f"--config-file {methods}/configs/RowTuning/tiny.yaml" in dry.stdout
    proc = subprocess.run(["bash", "compare.sh", *args], cwd=ROOT, env=env_for(tmp), capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr
    tag = os.path.splitext(os.path.basename(clip_file))[0].replace("_", "_")
    run = out / "image_folder" / "RowTuning" / f"tiny_{tag.replace('-', '')}_2shots" / "seed2"
    assert (run / "run.json").is_file() and (run / "results_test.json").is_file()

    from scripts import summarize

    written = summarize.summarize(str(out), str(tmp / "summary"))
    rows = list(summarize.csv.reader(open(tmp / "summary" / "summary.csv")))
    row = next(r for r in rows if r[1] == "RowTuning")
    assert row[0] == "image_folder" and all("(n=2)" in cell for cell in row[2:4])
    assert row[4].strip() and row[5].strip()  # git commit and weights sha256 of its runs
    table = summarize.Table(summarize.collect(str(out)))
    series = summarize._dataset_series(table, "image_folder")
    assert [label for label, _ in series] == ["RowTuning"] and [p[0] for p in series[0][1]] == [1, 2]
    assert str(tmp / "summary" / "comparison.png") in written


def test_torchrun_extraction_sets_it_up_as_train_py_does(outside):
    tmp, methods, clip_file, data = outside
    args = ["--root", data, "--seed", "1", "--trainer", "RowTuning", "--trainer-dir", str(methods),
            "--config-file", str(methods / "configs" / "RowTuning" / "tiny.yaml"),
            "--dataset-config-file", "configs/datasets/image_folder.yaml", "--output-dir", str(tmp / "tr"),
            "DATASET.NUM_SHOTS", "2", "FEATURE_CACHE.DIR", str(tmp / "sharded")]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "engine.distributed", "extract", *args], cwd=ROOT,
                          env=env_for(tmp, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Unknown trainer" not in proc.stderr
    assert any(name.endswith(".pt") or os.path.isdir(os.path.join(tmp / "sharded", name))
               for name in os.listdir(tmp / "sharded"))
