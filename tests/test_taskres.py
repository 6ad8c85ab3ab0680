"""TaskRes itself: the formula, what trains, the base, precision and variants."""
import os

import pytest
import torch
import torch.nn.functional as F

import clip
from trainers.taskres import (
    CustomCLIP, ImageResidualLearner, TaskResLearner, build_base_text_features, load_enhanced_projection)
from trainers.templates import IMAGENET_TEMPLATES_SELECT, base_templates

from helpers import tiny_clip


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


def test_only_the_residual_receives_gradients(clip_model):
    base = torch.randn(4, clip_model.embed_dim)
    model = CustomCLIP(clip_model, TaskResLearner(base, alpha=1.0))
    for name, p in model.named_parameters():
        p.requires_grad_("prompt_learner" in name)
    images = torch.randn(2, 3, clip_model.image_resolution, clip_model.image_resolution)
    F.cross_entropy(model(images), torch.tensor([0, 1])).backward()
    with_grad = [n for n, p in model.named_parameters() if p.grad is not None]
    assert with_grad == ["prompt_learner.text_feature_residuals"]
    assert set(model.prompt_learner.state_dict()) == {"base_text_features", "text_feature_residuals"}
    assert not model.prompt_learner.base_text_features.requires_grad


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
