"""The comparison methods' math on its own (trainers/methods/*), with expected values derived
by hand, and the zero-shot invariants on a tiny CLIP: Tip-Adapter at alpha 0 and CLIP-Adapter
at ratio 0 give zero-shot CLIP's logits."""
import math

import numpy as np
import pytest
import torch

from clip_fixtures import make_tiny_clip_model
from trainers.methods import clip_adapter as ca
from trainers.methods import linear_probe as lp
from trainers.methods import tip_adapter as tip
from trainers.methods.prompt_ensemble import ensemble_classifier, ensemble_templates, zero_shot_logits
from trainers.templates import IMAGENET_TEMPLATES_SELECT
from trainers.text_features import prompt_features


@pytest.fixture(scope="module")
def clip_model():
    import clip

    return clip.add_attributes(make_tiny_clip_model(vision="vit"))


@pytest.fixture(scope="module")
def text_and_images(clip_model):
    """Raw text features of one template for 3 classes, and 5 raw image features."""
    text = prompt_features(clip_model, ["cat", "dog", "red fox"], ["a photo of a {}."])
    images = torch.randn(5, text.shape[-1], generator=torch.Generator().manual_seed(0))
    return text, images


# ---- prompt ensemble (ZeroshotCLIP2, Tip-Adapter's classifier) ---------------------------------
def test_ensemble_normalises_each_template_then_the_mean():
    a = torch.tensor([[3.0, 4.0]])  # unit: (0.6, 0.8)
    b = torch.tensor([[0.0, 10.0]])  # unit: (0, 1)
    out = ensemble_classifier(torch.stack([a, b]))
    mean = torch.tensor([0.3, 0.9])
    assert torch.allclose(out[0], mean / mean.norm())  # not the mean of the raw features (3, 7)/norm


def test_zsclip2_templates_are_the_seven_plus_the_dataset_one_and_never_accumulate():
    first = ensemble_templates(IMAGENET_TEMPLATES_SELECT, "{} texture.", "DescribableTextures")
    second = ensemble_templates(IMAGENET_TEMPLATES_SELECT, "{} texture.", "DescribableTextures")
    assert first == second == list(IMAGENET_TEMPLATES_SELECT) + ["{} texture."]
    assert ensemble_templates(IMAGENET_TEMPLATES_SELECT, "a photo of a {}.", "ImageNet") == list(IMAGENET_TEMPLATES_SELECT)


# ---- linear probe: lpclip's C search -----------------------------------------------------------
def test_c_search_follows_the_original_steps_derived_by_hand():
    # val accuracy peaked at log10(C) = 0.3. Coarse peak: C = 1 (log 0). Steps (left, right in
    # log10 -> kept): (-1, 1) -> 1 [right]; (0, 1) -> 0 [left]; (0, .5) -> .5; (.25, .5) -> .25;
    # (.25, .375) -> .25; (.25, .3125) -> .3125; (.28125, .3125) -> .3125; (.296875, .3125) -> .296875
    def score(c):
        return -(math.log10(c) - 0.3) ** 2

    c, trace = lp.search_c(score)
    assert c == pytest.approx(10 ** 0.296875, rel=1e-12)
    assert len(trace) == 7 + 2 * 8
    assert [round(math.log10(x), 6) for x, _ in trace[7:9]] == [-1.0, 1.0]


def test_c_search_ties_keep_the_first_coarse_value_and_the_left_end():
    # all accuracies equal: np.argmax takes 1e6, and every step keeps the left end, 1e5
    c, _ = lp.search_c(lambda c: 0.5)
    assert c == 1e5


def test_linear_probe_separates_a_separable_set_perfectly():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (3, 16)) * 10
    x = np.concatenate([centres[k] + rng.normal(0, 0.5, (20, 16)) for k in range(3)])
    y = np.repeat(np.arange(3), 20)
    train, val = np.arange(60) % 2 == 0, np.arange(60) % 2 == 1
    c, _ = lp.search_c(lambda c: lp.accuracy(lp.fit_logistic(x[train], y[train], c), x[val], y[val]))
    weight, bias = lp.linear_weights(lp.fit_logistic(x[train], y[train], c), 3)
    logits = x @ weight.T + bias
    assert (logits.argmax(1) == y).all()


def test_linear_weights_rank_classes_as_the_classifier_predicts():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (40, 5))
    y = (x[:, 0] > 0).astype(int) * 2  # labels 0 and 2 of 3 classes: binary, class 1 absent
    clf = lp.fit_logistic(x, y, 1.0)
    weight, bias = lp.linear_weights(clf, 3)
    assert ((x @ weight.T + bias).argmax(1) == clf.predict(x)).all()
    assert bias[1] == -math.inf


def test_fewshot_val_keeps_at_most_k_per_class():
    labels = np.array([0] * 10 + [1] * 3)
    keep = lp.fewshot_val_indices(labels, 4, seed=1)
    assert np.bincount(labels[keep]).tolist() == [4, 3]
    assert (keep == lp.fewshot_val_indices(labels, 4, seed=1)).all()


# ---- CLIP-Adapter --------------------------------------------------------------------------------
def test_adapter_is_the_originals_bottleneck():
    adapter = ca.Adapter(32, 4)
    assert {k: tuple(v.shape) for k, v in adapter.state_dict().items()} == {"fc.0.weight": (8, 32), "fc.2.weight": (32, 8)}
    assert (adapter(torch.randn(7, 32)) >= 0).all()  # a ReLU on the output too


def test_clip_adapter_at_ratio_zero_is_zero_shot_clip(clip_model, text_and_images):
    text, images = text_and_images
    scale = clip_model.logit_scale.exp()
    expected = zero_shot_logits(images, text[0] / text[0].norm(dim=-1, keepdim=True), scale)
    got = ca.adapter_logits(images, ca.Adapter(images.shape[1]), text[0], 0.0, scale)
    assert torch.allclose(got, expected, atol=1e-5)
    moved = ca.adapter_logits(images, ca.Adapter(images.shape[1]), text[0], 0.2, scale)
    assert not torch.allclose(moved, expected, atol=1e-3)  # the comparison can fail


# ---- Tip-Adapter ---------------------------------------------------------------------------------
def test_cache_keys_are_the_normalised_mean_of_the_views():
    views = torch.tensor([[[1.0, 0.0]], [[0.0, 3.0]]])  # 2 views of 1 image
    keys, values = tip.build_cache(views, [2], 3)
    mean = torch.tensor([0.5, 1.5])
    assert torch.allclose(keys[0], mean / mean.norm())
    assert values.tolist() == [[0.0, 0.0, 1.0]]


def test_search_grid_is_the_originals():
    grid = tip.search_grid(12, 200)
    assert len(grid) == 200 and grid[0] == 0.1 and grid[1] == pytest.approx(0.1 + 11.9 / 200)
    assert grid[-1] == pytest.approx(0.1 + 199 * 11.9 / 200) and grid[-1] < 12


def test_search_keeps_the_first_strict_improvement():
    feats = torch.eye(3)
    keys, values = feats.clone(), torch.nn.functional.one_hot(torch.tensor([1, 1, 1]), 3).float()
    labels = torch.tensor([1, 1, 1])
    # zero classifier: zero-shot ties pick class 0 (0 %); any alpha > 0 makes every answer class 1
    beta, alpha, acc = tip.search_hp(feats, labels, keys, values, torch.zeros(3, 3), 100.0, [12, 10], [200, 20])
    assert (beta, alpha, acc) == (0.1, 0.1, 100.0)
    # nothing ever beats 0 %: the original's initial (0, 0) stays
    assert tip.search_hp(feats, torch.tensor([2, 2, 2]), keys, values, torch.zeros(3, 3), 100.0, [2, 2], [3, 3]) == (0, 0, 0)


def test_affinity_is_exp_minus_beta_one_minus_cos():
    f = torch.tensor([[1.0, 0.0]])
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    out = tip.cache_logits(f, keys, torch.eye(2), beta=2.0)
    assert torch.allclose(out, torch.tensor([[1.0, math.exp(-2.0)]]))


def test_tip_adapter_at_alpha_zero_is_zero_shot_clip(clip_model, text_and_images):
    text, images = text_and_images
    scale = clip_model.logit_scale.exp().item()
    classifier = ensemble_classifier(text)
    head = tip.TipAdapterHead(classifier, 6, 3, alpha=0.0, beta=1.0, logit_scale=scale)
    keys, values = tip.build_cache(torch.randn(2, 6, images.shape[1]), [0, 1, 2, 0, 1, 2], 3)
    head.set_cache(keys, values)
    expected = zero_shot_logits(images, classifier, scale)
    assert torch.allclose(head(images), expected, atol=1e-5)
    head.set_hp(alpha=1.0, beta=1.0)
    assert not torch.allclose(head(images), expected, atol=1e-3)


def test_tip_adapter_f_keys_are_the_only_parameter():
    head = tip.TipAdapterHead(torch.eye(3), 4, 3, 1.0, 1.0, 100.0, learnable_keys=True)
    assert [n for n, _ in head.named_parameters()] == ["cache_keys"]
    assert set(head.state_dict()) == {"classifier", "cache_values", "cache_keys", "alpha", "beta", "logit_scale"}
