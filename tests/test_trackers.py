"""The optional experiment trackers (engine/trackers.py), each behind its config key: MLflow on a
local file store (params from the config, metrics, run.json as an artifact) and W&B offline; and
the core path imports neither unless its key is set."""
import glob
import json
import os
import subprocess
import sys

import pytest

from helpers import ROOT, make_image_folder, run_train, tiny_clip, write_tiny_config


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trackers")
    data = make_image_folder(tmp / "data", per_class=6)
    cfg = write_tiny_config(tmp / "cfg.yaml", tiny_clip(tmp), epochs=2, batch=4)
    return tmp, data, cfg


def train(tmp, data, cfg, name, *opts):
    out = tmp / name
    run_train("--root", data, "--seed", "1", "--trainer", "TaskRes", "--config-file", cfg, "--output-dir", out,
              "DATASET.NUM_SHOTS", "2", "FEATURE_CACHE.DIR", tmp / "cache", *opts)
    return out


def test_mlflow_local_store_holds_params_metrics_and_run_json(setup):
    mlflow = pytest.importorskip("mlflow", reason="pip install -r requirements-trackers.txt")
    tmp, data, cfg = setup
    store = f"file:{tmp / 'mlruns'}"
    out = train(tmp, data, cfg, "ml", "TRACKING.MLFLOW", "True", "TRACKING.MLFLOW_URI", store)
    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    [run] = client.search_runs([client.get_experiment_by_name("taskres").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["trainer"] == "TaskRes"
    assert run.data.params["OPTIM.MAX_EPOCH"] == "2" and run.data.params["DATASET.NUM_SHOTS"] == "2"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert len(history) >= 2  # one point per written step, as tensorboard's
    test_acc = json.loads((out / "results_test.json").read_text())["accuracy"]
    assert run.data.metrics["test/accuracy"] == pytest.approx(test_acc)
    artifact = client.download_artifacts(run.info.run_id, "run.json", str(tmp / "dl"))
    assert json.load(open(artifact))["status"] == "finished"


def test_wandb_offline_run_holds_config_metrics_and_run_json(setup):
    pytest.importorskip("wandb", reason="pip install -r requirements-trackers.txt")
    tmp, data, cfg = setup
    out = train(tmp, data, cfg, "wb", "TRACKING.WANDB", "True", "TRACKING.WANDB_DIR", tmp / "wandb")
    [run_dir] = glob.glob(str(tmp / "wandb" / "wandb" / "offline-run-*"))
    files = os.path.join(run_dir, "files")
    assert json.load(open(os.path.join(files, "run.json")))["trainer"] == "TaskRes"
    # the offline log `wandb sync` uploads: its records hold the config, the metrics and their values
    [log] = glob.glob(os.path.join(run_dir, "*.wandb"))
    records = open(log, "rb").read()
    accuracy = json.loads((out / "results_test.json").read_text())["accuracy"]
    assert b"OPTIM.MAX_EPOCH" in records and b"test/accuracy" in records and b"train/loss" in records
    assert json.dumps(accuracy).encode() in records


def test_the_core_path_imports_no_tracker(setup):
    tmp, data, cfg = setup
    code = ("import sys, train; train.main(sys.argv[1:]); "
            "assert 'mlflow' not in sys.modules and 'wandb' not in sys.modules, 'a tracker was imported'")
    proc = subprocess.run([sys.executable, "-c", code, "--root", data, "--seed", "1", "--trainer", "TaskRes",
                           "--config-file", cfg, "--output-dir", str(tmp / "plain"), "DATASET.NUM_SHOTS", "2",
                           "FEATURE_CACHE.DIR", str(tmp / "cache")], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
