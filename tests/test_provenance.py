"""run.json (engine/provenance.py) for training and evaluation runs, the weights hash kept per
file, summarize.py's warning for run folders of an older version, and ``train.py --list``."""
import json
import logging
import os

from helpers import make_image_folder, run_train, tiny_clip, write_tiny_config

from engine import provenance


def test_weights_are_hashed_once_per_file_identity(tmp_path, monkeypatch):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x" * 1000)
    calls = []
    real = provenance.sha256_file
    monkeypatch.setattr(provenance, "sha256_file", lambda path: calls.append(path) or real(path))
    first = provenance.file_sha256(str(weights), str(tmp_path / "cache"))
    assert provenance.file_sha256(str(weights), str(tmp_path / "cache")) == first and len(calls) == 1
    weights.write_bytes(b"y" * 1000)  # another file under the same name: hashed again, never reused
    os.utime(weights, ns=(1, 1))
    assert provenance.file_sha256(str(weights), str(tmp_path / "cache")) != first and len(calls) == 2


def test_train_and_eval_runs_write_run_json(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=6)
    cfg = write_tiny_config(tmp_path / "cfg.yaml", tiny_clip(tmp_path), epochs=2, batch=4)
    common = ["--root", data, "--seed", "2", "--trainer", "TaskRes", "--config-file", cfg,
              "FEATURE_CACHE.DIR", tmp_path / "cache", "TRAINER.TaskRes.RESIDUAL_SCALE", "0.5"]
    run_train(*common, "--output-dir", tmp_path / "train", "DATASET.NUM_SHOTS", "2")
    run_train(*common, "--output-dir", tmp_path / "eval", "--model-dir", tmp_path / "train", "--load-epoch", "2",
              "--eval-only")
    train = json.loads((tmp_path / "train" / "run.json").read_text())
    evaluation = json.loads((tmp_path / "eval" / "run.json").read_text())
    assert (train["method"], train["label"], train["seed"], train["shots"]) == (
        "TaskRes", "TaskRes (regular base)", 2, 2)
    assert train["config_sha256"] == provenance.sha256_file(cfg) and train["git_commit"]
    assert train["feature_cache"] == {"enabled": True, "train_views": 4} and train["status"] == "finished"
    assert evaluation["eval_only"] and evaluation["model_dir"] == str(tmp_path / "train")
    assert evaluation["results"]["test"]["accuracy"] == json.loads(
        (tmp_path / "eval" / "results_test.json").read_text())["accuracy"]
    assert evaluation["weights_sha256"] == train["weights_sha256"] and len(train["weights_sha256"]) == 64


def test_summary_warns_about_folders_without_run_json(tmp_path, caplog):
    from scripts import summarize

    run = tmp_path / "out" / "dtd" / "TaskRes" / "adam_lr2e-3_B256_ep200_rn50_regular-base_alpha0.5_16shots" / "seed1"
    run.mkdir(parents=True)
    (run / "log.txt").write_text("Finish training\nEvaluate on the *test* set\n=> result\n* accuracy: 60.0%\n")
    with caplog.at_level(logging.WARNING):
        runs = summarize.collect(str(tmp_path / "out"))
    assert [(r.method, r.seeds) for r in runs] == [("TaskRes", {1: 60.0})]
    assert "hold no run.json (written by an older version)" in caplog.text


def test_list_prints_trainers_protocols_and_datasets_present(tmp_path, capsys):
    from engine import launch

    launch.main(["--list", "trainers"])
    out = capsys.readouterr().out
    assert "TaskRes  (trainers/taskres.py)" in out and "variant TaskRes-enhanced:" in out and "needs StrongBase" in out
    assert "config rule coop_schedule(dataset, shots, family)" in out
    (tmp_path / "dtd").mkdir()
    launch.main(["--list", "datasets", "--root", str(tmp_path)])
    rows = {line.split()[0]: line.split()[-1] for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["DescribableTextures"] == "present" and rows["EuroSAT"] == "missing"
    launch.main(["--list", "configs"])
    assert "configs/trainers/TaskRes/: adam_lr2e-3_B256_ep100" in capsys.readouterr().out
