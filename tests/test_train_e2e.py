"""train.py end to end on a tiny image folder and a tiny CLIP: train, log, checkpoints, resume, eval."""
import json
import os
import re

import pytest
import torch

from engine.errors import CheckpointError, ConfigError, UserError
from helpers import accuracies, make_image_folder, run_train, tiny_clip, write_tiny_config


@pytest.fixture
def setup(tmp_path):
    data = make_image_folder(tmp_path / "data")
    cfg = write_tiny_config(tmp_path / "cfg.yaml", tiny_clip(tmp_path), epochs=6)
    return data, cfg, tmp_path


def taskres_args(data, cfg, out, *opts, shots=4):
    return ["--root", data, "--seed", 1, "--trainer", "TaskRes", "--config-file", cfg, "--output-dir", out,
            "DATASET.NUM_SHOTS", shots, *opts]


def train_losses(log):
    return [float(x) for x in re.findall(r"loss ([\d.]+) \(", open(log).read())]


def test_short_run_learns_and_writes_dassl_outputs(setup):
    data, cfg, tmp = setup
    out = tmp / "out"
    trainer = run_train(*taskres_args(data, cfg, out, "OPTIM.MAX_EPOCH", 30, "OPTIM.LR", 0.05))
    log = out / "log.txt"
    text = log.read_text()
    for line in ("=> result", "* total:", "* correct:", "* accuracy:", "* error:", "* macro_f1:",
                 "Finish training", "Elapsed:", "epoch [1/30] batch [1/"):
        assert line in text, line
    losses = train_losses(log)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.05  # the loss went down
    ckpt_dir = out / "prompt_learner"
    assert (ckpt_dir / "checkpoint").read_text().strip() == "model.pth.tar-30"
    ckpt = torch.load(ckpt_dir / "model.pth.tar-30", weights_only=False)
    assert set(ckpt) == {"state_dict", "epoch", "optimizer", "scheduler", "val_result"}
    assert ckpt["epoch"] == 30
    assert set(ckpt["state_dict"]) == {"base_text_features", "text_feature_residuals"}
    assert ckpt["state_dict"]["text_feature_residuals"].abs().sum() > 0
    results = json.loads((out / "results_test.json").read_text())
    assert results["accuracy"] == accuracies(log)[-1]
    assert (out / "config.yaml").exists() and (out / "tensorboard").is_dir()
    assert trainer.model.prompt_learner.alpha == 1.0  # the code default of RESIDUAL_SCALE


def test_interrupted_run_resumes_to_the_same_result(setup):
    data, cfg, tmp = setup
    full, cut = tmp / "full", tmp / "cut"
    run_train(*taskres_args(data, cfg, full))
    run_train(*taskres_args(data, cfg, cut, "TRAIN.CHECKPOINT_FREQ", 3))
    # make the second run look as if it died after epoch 3: its later checkpoint is gone
    ckdir = cut / "prompt_learner"
    reference = torch.load(full / "prompt_learner" / "model.pth.tar-6", weights_only=False)["state_dict"]
    (ckdir / "model.pth.tar-6").unlink()
    (ckdir / "checkpoint").write_text("model.pth.tar-3\n")
    run_train(*taskres_args(data, cfg, cut, "TRAIN.CHECKPOINT_FREQ", 3))
    # one log.txt (CoOp's parse_test_res.py reads no other): the resumed run appended after a separator
    assert [p for p in os.listdir(cut) if p.startswith("log.txt")] == ["log.txt"]
    first, text = (cut / "log.txt").read_text().split("new run in this folder")
    assert "epoch [6/6]" in first
    assert "Previous epoch: 3" in text and "epoch [4/6]" in text and "epoch [3/6]" not in text
    resumed = torch.load(ckdir / "model.pth.tar-6", weights_only=False)["state_dict"]
    assert torch.allclose(resumed["text_feature_residuals"], reference["text_feature_residuals"], atol=1e-6)
    assert accuracies(cut / "log.txt")[-1] == accuracies(full / "log.txt")[-1]


def test_eval_only_reproduces_the_accuracy(setup):
    data, cfg, tmp = setup
    out = tmp / "out"
    run_train(*taskres_args(data, cfg, out))
    trained = accuracies(out / "log.txt")[-1]
    ev = tmp / "eval"
    run_train("--root", data, "--seed", 1, "--trainer", "TaskRes", "--config-file", cfg, "--output-dir", ev,
              "--eval-only", "--model-dir", out, "--load-epoch", 6, "DATASET.NUM_SHOTS", 4)
    text = (ev / "log.txt").read_text()
    assert 'Loading weights to prompt_learner from' in text and "(epoch = 6)" in text
    assert accuracies(ev / "log.txt") == [trained]
    with pytest.raises(CheckpointError, match="epochs saved there: 6"):
        run_train("--root", data, "--trainer", "TaskRes", "--config-file", cfg, "--output-dir", tmp / "e2",
                  "--eval-only", "--model-dir", out, "--load-epoch", 4)
    with pytest.raises(UserError, match="--eval-only needs --model-dir"):
        run_train("--root", data, "--trainer", "TaskRes", "--config-file", cfg, "--output-dir", tmp / "e3", "--eval-only")


def test_enhanced_base_is_used_in_fp32(setup):
    data, cfg, tmp = setup
    regular = run_train(*taskres_args(data, cfg, tmp / "reg", "OPTIM.MAX_EPOCH", 1, "TRAINER.TaskRes.PREC", "fp32"))
    width, dim = regular.clip_model.text_projection.shape
    torch.manual_seed(1)
    base_file = tmp / "strong_base" / "ImageFolder" / "rn50_4shots" / "model.pth.tar"
    base_file.parent.mkdir(parents=True)
    torch.save({"state_dict": {"weight": torch.randn(dim, width)}, "epoch": 50, "optimizer": None,
                "scheduler": None, "val_result": None}, base_file)
    enhanced = run_train("--enhanced-base", base_file, *taskres_args(data, cfg, tmp / "enh", "OPTIM.MAX_EPOCH", 1,
                                                                    "TRAINER.TaskRes.PREC", "fp32"))
    a = regular.model.prompt_learner.base_text_features
    b = enhanced.model.prompt_learner.base_text_features
    assert a.shape == b.shape and not torch.allclose(a, b)


def test_enhanced_run_evaluates_and_resumes_without_its_base_file(setup):
    """The checkpoint holds the (enhanced) base: eval-only and resume need no strong_base file; a
    fresh training run does, and says so in one sentence."""
    data, cfg, tmp = setup
    probe = run_train(*taskres_args(data, cfg, tmp / "probe", "OPTIM.MAX_EPOCH", 1))
    width, dim = probe.clip_model.text_projection.shape
    torch.manual_seed(1)
    base_file = tmp / "strong_base" / "model.pth.tar"
    base_file.parent.mkdir(parents=True)
    torch.save({"state_dict": {"weight": torch.randn(dim, width)}, "epoch": 50}, base_file)
    trained = run_train("--enhanced-base", base_file, *taskres_args(data, cfg, tmp / "enh", "OPTIM.MAX_EPOCH", 2))
    base_file.rename(tmp / "moved.pth.tar")  # the file is gone (moved, another machine)
    evaluated = run_train("--enhanced-base", base_file, "--eval-only", "--model-dir", tmp / "enh", "--load-epoch", 2,
                          *taskres_args(data, cfg, tmp / "eval"))
    torch.testing.assert_close(evaluated.model.prompt_learner.base_text_features,
                               trained.model.prompt_learner.base_text_features)
    assert accuracies(tmp / "eval" / "log.txt")[-1] == accuracies(tmp / "enh" / "log.txt")[-1]
    with pytest.raises(CheckpointError, match=r"Enhanced base .*model.pth.tar not found; produce it"):
        run_train("--enhanced-base", base_file, *taskres_args(data, cfg, tmp / "fresh", "OPTIM.MAX_EPOCH", 1))


def test_config_merge_order(setup, tmp_path):
    import train

    data, cfg, _ = setup
    ds = tmp_path / "ds.yaml"
    ds.write_text("DATASET:\n  NAME: OxfordPets\nOPTIM:\n  LR: 0.5\n  MAX_EPOCH: 7\nINPUT:\n  SIZE: (64, 64)\n")
    args = train.build_parser().parse_args([
        "--dataset-config-file", str(ds), "--config-file", cfg, "--backbone", "RN101", "--trainer", "TaskRes",
        "OPTIM.MAX_EPOCH", "9"])
    c = train.setup_cfg(args)
    assert c.DATASET.NAME == "ImageFolder"  # trainer yaml over dataset yaml (it names the dataset too)
    assert c.OPTIM.LR == 0.01  # trainer yaml over dataset yaml
    assert tuple(c.INPUT.SIZE) == (32, 32)
    assert c.MODEL.BACKBONE.NAME == "RN101"  # CLI over yaml
    assert c.OPTIM.MAX_EPOCH == 9  # opts over everything
    assert c.TRAINER.TaskRes.PREC == "fp16" and c.TRAINER.TaskRes.RESIDUAL_SCALE == 1.0
    assert c.TRAINER.TaskRes.ENHANCED_BASE == "none"
    with pytest.raises(ConfigError, match='Unknown config key "OPTIM.LRR".*Did you mean "OPTIM.LR"'):
        train.setup_cfg(train.build_parser().parse_args(["OPTIM.LRR", "1"]))
    with pytest.raises(ConfigError, match="OPTIM.MAX_EPOCH"):
        train.setup_cfg(train.build_parser().parse_args(["OPTIM.MAX_EPOCH", "many"]))


def test_unknown_trainer_and_backbone_are_one_sentence(setup):
    data, cfg, tmp = setup
    with pytest.raises(ConfigError, match='Unknown trainer "TaskRess". Did you mean "TaskRes"'):
        run_train("--root", data, "--trainer", "TaskRess", "--config-file", cfg, "--output-dir", tmp / "o1")
    with pytest.raises(UserError, match="Unknown CLIP model 'RN5'"):
        run_train(*taskres_args(data, cfg, tmp / "o2", "MODEL.BACKBONE.NAME", "RN5"))


def test_zero_shot_clip_evaluates_from_the_cache(setup):
    data, cfg, tmp = setup
    out = tmp / "zs"
    run_train("--root", data, "--trainer", "ZeroshotCLIP", "--config-file", cfg, "--output-dir", out, "--eval-only")
    assert len(accuracies(out / "log.txt")) == 1
    assert any(os.scandir(os.environ["TASKRES_FEATURE_CACHE"]))


def test_untrained_backbone_is_deterministic_and_warned_in_the_log(setup, monkeypatch):
    """MODEL.BACKBONE.PRETRAINED False: the architecture with seeded random weights (the same in
    every run, whatever the run's seed), the encoder in the loop, and a marked warning in log.txt."""
    import open_clip.factory

    import clip

    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "TinyUntrainedViT", {
        "embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1}})
    data, cfg, tmp = setup
    untrained = ("MODEL.BACKBONE.NAME", "TinyUntrainedViT", "MODEL.BACKBONE.PRETRAINED", False,
                 "FEATURE_CACHE.ENABLED", False, "OPTIM.MAX_EPOCH", 2, "TRAINER.TaskRes.PREC", "fp32")
    runs = [run_train(*taskres_args(data, cfg, tmp / name, *untrained)) for name in ("first", "second")]
    weights = [run.clip_model.state_dict() for run in runs]
    torch.manual_seed(123)  # the caller's random state does not reach the weights
    expected = clip.untrained_model("TinyUntrainedViT").state_dict()
    for got in weights:
        assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in expected)
    assert torch.equal(*(run.model.prompt_learner.text_feature_residuals for run in runs))
    assert accuracies(tmp / "first" / "log.txt") == accuracies(tmp / "second" / "log.txt")
    log = (tmp / "first" / "log.txt").read_text()
    assert ("WARNING: MODEL.BACKBONE.PRETRAINED is False: TinyUntrainedViT has random weights (untrained backbone)"
            in log.splitlines())
