"""TaskRes itself: the formula, what trains, the base, precision and variants."""
import os
import re

import pytest
import torch
import torch.nn.functional as F

import clip
from trainers.taskres import (
    CustomCLIP, ImageResidualLearner, TaskResLearner, build_base_text_features, load_enhanced_projection)
from trainers.templates import IMAGENET_TEMPLATES_SELECT, base_templates

from dataset_replicas import IMAGENET, IMAGENET_A_ROWS, IMAGENET_R_ROWS, build_replica
from helpers import accuracies, make_image_folder, run_train, tiny_clip, write_tiny_config


@pytest.fixture(scope="module")
def clip_model(tmp_path_factory):
    model, _ = clip.load(tiny_clip(tmp_path_factory.mktemp("clip")))
    return model


def test_forward_equals_the_formula_by_hand(clip_model):
    torch.manual_seed(0)
    base = torch.randn(5, clip_model.embed_dim)
    learner = TaskResLearner(base, alpha=0.5)
    with torch.no_grad():
        learner.text_feature_residuals.copy_(torch.randn_like(base))
    model = CustomCLIP(clip_model, learner)
    feats = torch.randn(3, clip_model.embed_dim)

    text = base + 0.5 * learner.text_feature_residuals
    expected = clip_model.logit_scale.exp() * F.normalize(feats, dim=-1) @ F.normalize(text, dim=-1).t()
    assert torch.allclose(model(feats), expected, atol=1e-5)

    images = torch.randn(3, 3, clip_model.image_resolution, clip_model.image_resolution)
    from_images = clip_model.logit_scale.exp() * F.normalize(clip_model.encode_image(images), dim=-1) @ F.normalize(text, dim=-1).t()
    assert torch.allclose(model(images), from_images, atol=1e-5)


def test_the_trainer_trains_only_the_residual(tmp_path):
    """The real trainer, end to end (encoder in the loop, so gradients could reach CLIP): only
    prompt_learner.text_feature_residuals changes; CLIP's weights and the base stay as loaded."""
    clip_path = tiny_clip(tmp_path)
    data = make_image_folder(tmp_path / "data")
    cfg = write_tiny_config(tmp_path / "cfg.yaml", clip_path, epochs=2)
    trainer = run_train("--root", data, "--seed", 1, "--trainer", "TaskRes", "--config-file", cfg, "--output-dir",
                        tmp_path / "out", "DATASET.NUM_SHOTS", 4, "FEATURE_CACHE.ENABLED", False,
                        "TRAINER.TaskRes.PREC", "fp32", "OPTIM.LR", 0.05)
    assert trainer.feature_store is None  # images went through the encoder at every step
    trained = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trained == ["prompt_learner.text_feature_residuals"]
    assert all(p.grad is None for n, p in trainer.model.named_parameters() if n not in trained)
    assert list(trainer.get_model_names()) == ["prompt_learner"]
    loaded, _ = clip.load(clip_path)
    after = trainer.clip_model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in loaded.state_dict().items())
    learner = trainer.model.prompt_learner
    base = build_base_text_features(loaded, trainer.dm.dataset.classnames, "ImageFolder")
    assert torch.allclose(learner.base_text_features, base, atol=1e-6)
    assert learner.text_feature_residuals.abs().sum() > 0  # it did train


def test_residual_starts_at_zero_so_the_first_logits_are_zero_shot(clip_model):
    base = torch.randn(4, clip_model.embed_dim)
    learner = TaskResLearner(base, alpha=0.5)
    assert torch.equal(learner.text_feature_residuals, torch.zeros_like(base))
    assert torch.equal(learner(), base)


def test_base_is_the_raw_mean_over_templates(clip_model):
    names = ["cat", "dog_house"]
    base = build_base_text_features(clip_model, names, "ImageNet")
    prompts = [t.format(c) for t in base_templates("ImageNet") for c in names]
    with torch.no_grad():
        raw = clip_model.encode_text(clip.tokenize(prompts)).view(8, 2, -1).mean(0)
    assert torch.allclose(base, raw, atol=1e-5)
    assert not torch.allclose(base.norm(dim=-1), torch.ones(2))  # not normalised
    # class names are used as the dataset gives them (no "_" -> " " in the TaskRes base)
    assert "a photo of a dog_house." in prompts


def test_imagenet_templates_are_eight_and_not_mutated():
    first = base_templates("ImageNet")
    first.append("mutated {}")
    second = base_templates("ImageNet")
    assert len(second) == 8 and second[:7] == list(IMAGENET_TEMPLATES_SELECT) and second[7] == "a photo of a {}."
    assert base_templates("OxfordFlowers") == ["a photo of a {}, a type of flower."]
    assert base_templates("DescribableTextures") == ["{} texture."]


def test_enhanced_projection_changes_the_base_and_checks_shape(clip_model, tmp_path):
    width, dim = clip_model.text_projection.shape
    weight = torch.randn(dim, width)
    path = tmp_path / "model.pth.tar"
    torch.save({"state_dict": {"weight": weight}, "epoch": 50, "optimizer": None, "scheduler": None,
                "val_result": None}, path)
    proj = load_enhanced_projection(str(path), width, dim)
    assert torch.equal(proj, weight.t())
    regular = build_base_text_features(clip_model, ["cat", "dog"], "OxfordPets")
    enhanced = build_base_text_features(clip_model, ["cat", "dog"], "OxfordPets", projection=proj)
    assert not torch.allclose(regular, enhanced)
    # the projection is only borrowed
    assert torch.allclose(build_base_text_features(clip_model, ["cat", "dog"], "OxfordPets"), regular)

    torch.save({"state_dict": {"weight": torch.randn(dim + 1, width)}}, path)
    from engine.errors import CheckpointError

    with pytest.raises(CheckpointError, match=rf"shape \[{dim + 1}, {width}\].*needs \[{dim}, {width}\]"):
        load_enhanced_projection(str(path), width, dim)
    with pytest.raises(CheckpointError, match="not found"):
        load_enhanced_projection(str(tmp_path / "missing.tar"), width, dim)


def test_image_variant_learns_one_row_added_to_image_features(clip_model):
    base = torch.randn(4, clip_model.embed_dim)
    learner = ImageResidualLearner(base, alpha=0.5)
    assert learner.image_feature_residuals.shape == (1, clip_model.embed_dim)
    with torch.no_grad():
        learner.image_feature_residuals.fill_(0.3)
    model = CustomCLIP(clip_model, learner)
    feats = torch.randn(2, clip_model.embed_dim)
    expected = clip_model.logit_scale.exp() * F.normalize(feats + 0.15, dim=-1) @ F.normalize(base, dim=-1).t()
    assert torch.allclose(model(feats), expected, atol=1e-5)


# ---- through train.py ---------------------------------------------------------------------------
def taskres_run(tmp_path, out, *opts, dataset="ImageFolder", root=None, epochs=3):
    root = root or make_image_folder(tmp_path / "data")
    cfg = write_tiny_config(tmp_path / "cfg.yaml", tiny_clip(tmp_path), dataset=dataset, epochs=epochs, batch=4)
    return run_train("--root", root, "--seed", 1, "--trainer", "TaskRes", "--config-file", cfg,
                     "--output-dir", tmp_path / out, *opts)


def test_image_variant_trains_and_evaluates_through_train_py(tmp_path):
    """TRAINER.TaskRes.VARIANT image: one [1, D] row learnt, saved, loaded and added at test time."""
    image = ("DATASET.NUM_SHOTS", 4, "TRAINER.TaskRes.VARIANT", "image", "TRAINER.TaskRes.RESIDUAL_SCALE", 0.5)
    trainer = taskres_run(tmp_path, "train", *image, "OPTIM.LR", 0.05)
    assert isinstance(trainer.model.prompt_learner, ImageResidualLearner)
    state = torch.load(tmp_path / "train" / "prompt_learner" / "model.pth.tar-3", weights_only=False)["state_dict"]
    assert set(state) == {"base_text_features", "image_feature_residuals"}
    row = state["image_feature_residuals"]
    assert row.shape == (1, trainer.clip_model.embed_dim) and row.abs().sum() > 0
    base = build_base_text_features(trainer.clip_model, trainer.dm.dataset.classnames, "ImageFolder")
    assert torch.allclose(state["base_text_features"], base, atol=1e-6)  # the text side never trains
    trained = accuracies(tmp_path / "train" / "log.txt")
    assert len(trained) == 1

    evaluated = taskres_run(tmp_path, "eval", "--eval-only", "--model-dir", tmp_path / "train", "--load-epoch", 3, *image)
    assert accuracies(tmp_path / "eval" / "log.txt") == trained
    feats = evaluated.test_loader.all_features()[0]
    scale = trainer.clip_model.logit_scale.exp()
    expected = scale * F.normalize(feats + 0.5 * row, dim=-1) @ F.normalize(base, dim=-1).t()
    torch.testing.assert_close(evaluated.model_inference(feats), expected, rtol=1e-5, atol=1e-5)


def test_fp16_on_cpu_warns_in_the_log_and_runs_fp32(tmp_path):
    trainer = taskres_run(tmp_path, "out", "DATASET.NUM_SHOTS", 2, "TRAINER.TaskRes.PREC", "fp16", "USE_CUDA", False,
                          epochs=1)  # on the CPU even where a GPU exists
    assert trainer.device.type == "cpu"
    assert trainer.prec == "fp32"
    assert trainer.clip_model.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in trainer.clip_model.parameters())
    assert trainer.model.prompt_learner.text_feature_residuals.dtype == torch.float32
    log = (tmp_path / "out" / "log.txt").read_text()
    # a marked warning line (warnings.warn, captured into log.txt with its source location)
    assert re.search(r"^WARNING: .*PREC fp16 needs a GPU; running in fp32 on the CPU$", log, re.M), log
    assert len(accuracies(tmp_path / "out" / "log.txt")) == 1  # and the run finished


@pytest.mark.parametrize("target, rows", [("ImageNetA", IMAGENET_A_ROWS), ("ImageNetR", IMAGENET_R_ROWS)])
def test_imagenet_checkpoint_on_a_and_r_keeps_exactly_their_rows(tmp_path, target, rows):
    """adapt_state_dict selects the target's classes from the ImageNet-trained checkpoint: the values
    of those rows (base and residual), so the logits are the source model's columns for them."""
    data = tmp_path / "data"
    for name in ("ImageNet", target):
        build_replica(name, data)
    source = taskres_run(tmp_path, "imagenet", "DATASET.NUM_SHOTS", 2, "OPTIM.LR", 0.05,
                         dataset="ImageNet", root=data, epochs=2)
    state = torch.load(tmp_path / "imagenet" / "prompt_learner" / "model.pth.tar-2", weights_only=False)["state_dict"]
    assert state["base_text_features"].shape[0] == len(IMAGENET)
    residuals = state["text_feature_residuals"]
    assert not torch.allclose(residuals[rows], residuals[:len(rows)])  # other rows would hold other values

    evaluated = taskres_run(tmp_path, target, "--eval-only", "--model-dir", tmp_path / "imagenet", "--load-epoch", 2,
                            "DATASET.NAME", target, dataset="ImageNet", root=data, epochs=2)
    learner = evaluated.model.prompt_learner
    assert torch.equal(learner.base_text_features, state["base_text_features"][rows])
    assert torch.equal(learner.text_feature_residuals, residuals[rows])
    assert f"Selecting the {len(rows)} classes of {target} from a {len(IMAGENET)}-class checkpoint" in \
        (tmp_path / target / "log.txt").read_text()
    feats = evaluated.test_loader.all_features()[0]
    torch.testing.assert_close(evaluated.model_inference(feats), source.model_inference(feats)[:, rows])
