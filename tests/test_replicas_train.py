"""Every dataset's miniature replica trains and evaluates through train.py (TaskRes, tiny CLIP)."""
import json
import os
import stat

import pytest

from dataset_replicas import REPLICA_NAMES, build_replica
from helpers import accuracies, run_train, tiny_clip, write_tiny_config


@pytest.mark.parametrize("name", REPLICA_NAMES)
def test_taskres_runs_on_each_replica(tmp_path, name):
    root = build_replica(name, tmp_path / "data")
    cfg = write_tiny_config(tmp_path / "cfg.yaml", tiny_clip(tmp_path), dataset=name, epochs=2)
    out = tmp_path / "out"
    trainer = run_train("--root", root, "--seed", 1, "--trainer", "TaskRes", "--config-file", cfg,
                        "--output-dir", out, "DATASET.NUM_SHOTS", 2)
    assert len(accuracies(out / "log.txt")) == 1
    assert trainer.model.prompt_learner.base_text_features.shape[0] == trainer.num_classes
    results = out / "results_test.json"
    assert round(json.loads(results.read_text())["accuracy"], 1) == accuracies(out / "log.txt")[0]
    # written atomically, yet with the permissions a plain open() gives under this umask (mkstemp: 0600)
    plain = out / "plain"
    plain.write_text("")
    assert stat.S_IMODE(os.stat(results).st_mode) == stat.S_IMODE(os.stat(plain).st_mode)
