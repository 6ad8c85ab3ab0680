"""The text-side methods of 2023-24 (trainers/kgcoop.py, prograd.py, clap.py) on a tiny CLIP, CPU.

Invariants: KgCoOp with W 0 trains exactly as CoOp (same context, same steps), and its penalty is
1 - mean cosine (hand-derived case), zero when the learnt prompt is the hand-crafted one; the
original KgCoOp's unused checkpoint keys load, any other key is named. ProGrad's projection
matches a hand-derived case and leaves a non-conflicting gradient alone; one trainer step moves
the context by exactly -lr * projected gradient; its CTX_INIT reproduces the teacher's prompt. CLAP's class weights and penalty match hand-derived
values, its untrained probe is zero-shot CLIP, its pooled views are a seeded permutation per epoch.
LP++'s step sizes, alpha's start and its accumulated alpha gradient match hand derivations, and
it keeps the best-val epoch. All train and evaluate through train.py on a replica with the original's checkpoint keys and
resume after SIGKILL to the uninterrupted result; their protocols name yaml files that exist and
hold the published values. Parity with the original repositories: scripts/parity/text_methods.py.
"""
import math
import os
import signal
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
import yaml

import clip
from dataset_replicas import build_replica
from engine.config import get_cfg_default, merge_from_file, merge_from_list
from engine.errors import CheckpointError, ConfigError
from engine.utils.checkpoint import load_checkpoint
from helpers import ROOT, accuracies, run_train, tiny_clip, write_tiny_config
from test_methods_train import CHILD, final_state, last_epoch
import trainers
from trainers import clap, coop, kgcoop, lp_plus_plus as lpp, prograd
from trainers.taskres import build_base_text_features
from engine.protocol import coop_epochs

CLASSNAMES = ["cat", "dog", "sea_lion", "bird"]
PROMPT_KEYS = {"ctx", "token_prefix", "token_suffix"}


@pytest.fixture
def clip_model(tmp_path):
    model, _ = clip.load(tiny_clip(tmp_path), device="cpu")
    return model.float().eval()


@pytest.fixture
def replica(tmp_path):
    root = build_replica("EuroSAT", tmp_path / "data")
    cfg = write_tiny_config(tmp_path / "cfg.yaml", tiny_clip(tmp_path), dataset="EuroSAT", epochs=3, batch=8,
                            lr=0.05)
    return root, cfg, tmp_path


def args(replica, out, trainer, *opts):
    root, cfg, _ = replica
    return ["--root", root, "--seed", 1, "--trainer", trainer, "--config-file", cfg, "--output-dir", out,
            "DATASET.NUM_SHOTS", 2, "OPTIM.NAME", "sgd", *opts]


# ---- KgCoOp -------------------------------------------------------------------------------------
def test_knowledge_gap_is_one_minus_the_mean_cosine():
    text = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    hand = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    # cosines 1 and 1/sqrt(2): gap = 1 - (1 + 0.7071) / 2
    assert kgcoop.knowledge_gap(text, hand).item() == pytest.approx(1 - (1 + 1 / math.sqrt(2)) / 2, abs=1e-6)
    assert kgcoop.knowledge_gap(hand, hand).item() == pytest.approx(0.0, abs=1e-6)


def test_learnt_prompt_equal_to_the_hand_crafted_one_has_no_gap(clip_model):
    """Context "a photo of a" + class name is the default template "a photo of a {}.": gap 0."""
    learner = coop.PromptLearner(CLASSNAMES, clip_model, ctx_init=kgcoop.INIT_WORDS)
    hand = kgcoop.hand_crafted_features(clip_model, CLASSNAMES, kgcoop.DEFAULT_TEMPLATE)
    model = kgcoop.KgCoOpCLIP(clip_model, learner, hand)
    with torch.no_grad():
        assert kgcoop.knowledge_gap(model.text_features(), model.hand_crafted_features).abs().item() < 1e-5
    assert "hand_crafted_features" not in model.state_dict()  # built from CLIP each run, never saved


def test_kgcoop_with_w_0_trains_exactly_as_coop(replica):
    tmp = replica[2]
    kg0 = run_train(*args(replica, tmp / "kg0", "KgCoOp", "TRAINER.KGCOOP.N_CTX", 4, "TRAINER.KGCOOP.CTX_INIT", True,
                          "TRAINER.KGCOOP.W", 0.0))
    co = run_train(*args(replica, tmp / "coop", "CoOp", "TRAINER.COOP.CTX_INIT", "a photo of a"))
    torch.testing.assert_close(kg0.model.prompt_learner.ctx, co.model.prompt_learner.ctx, rtol=0, atol=1e-6)
    assert accuracies(tmp / "kg0" / "log.txt") == accuracies(tmp / "coop" / "log.txt")
    kg8 = run_train(*args(replica, tmp / "kg8", "KgCoOp", "TRAINER.KGCOOP.N_CTX", 4, "TRAINER.KGCOOP.CTX_INIT", True,
                          "TRAINER.KGCOOP.W", 8.0))
    init = coop.init_context(kg8.clip_model, 4, kgcoop.INIT_WORDS, (), torch.float32)[0]
    moved = (co.model.prompt_learner.ctx - init).abs().max()
    assert moved > 1e-3  # CoOp trained ...
    # ... and the penalty pulls the context back towards the hand-crafted prompt's features
    gaps = [kgcoop.knowledge_gap(t.model.text_features(), kg8.model.hand_crafted_features).item() for t in (kg0, kg8)]
    assert gaps[1] < gaps[0]


def test_original_kgcoop_checkpoint_keys_load_and_a_wrong_key_is_named(clip_model):
    learner = coop.PromptLearner(CLASSNAMES, clip_model, ctx_init=kgcoop.INIT_WORDS)
    original = {**learner.state_dict(), "bias_vectors": torch.zeros(1, 512),
                "meta_net.linear1.weight": torch.zeros(512, 512), "meta_net.linear1.bias": torch.zeros(512)}
    original["ctx"] = original["ctx"] + 1.0
    learner.load_state_dict(coop.adapt_prompt_state_dict(learner, original, ignored=kgcoop.ORIGINAL_UNUSED_KEYS))
    torch.testing.assert_close(learner.ctx, original["ctx"])
    with pytest.raises(CheckpointError, match="unexpected ctx_typo"):
        coop.adapt_prompt_state_dict(learner, {"ctx_typo": original["ctx"]}, ignored=kgcoop.ORIGINAL_UNUSED_KEYS)


def test_kgcoop_templates_are_the_originals():
    assert kgcoop.TEMPLATES["DescribableTextures"] == "a photo of a {}, a type of texture."  # not CoOp's "{} texture."
    assert kgcoop.TEMPLATES["EuroSAT"] == "a centered satellite photo of {}."
    assert len(kgcoop.TEMPLATES) == 15


# ---- ProGrad ------------------------------------------------------------------------------------
@pytest.mark.parametrize("lambda_", [1.0, 0.8])
def test_projection_of_a_conflicting_gradient(lambda_):
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([-2.0, 2.0])
    # u = (-1, 1)/sqrt(2), a.u = -1/sqrt(2): a - lambda (a.u) u = (1 - lambda/2, lambda/2)
    g = prograd.project_gradient(a, b, lambda_)
    torch.testing.assert_close(g, torch.tensor([1 - lambda_ / 2, lambda_ / 2]))
    if lambda_ == 1.0:
        assert torch.dot(g, b).abs() < 1e-6  # the conflicting component is gone


def test_projection_keeps_a_non_conflicting_or_zero_gradient():
    a = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    assert torch.equal(prograd.project_gradient(a, torch.ones(2, 2), 1.0), a)
    assert torch.equal(prograd.project_gradient(a, torch.zeros(2, 2), 1.0), a)  # the original: NaN unit, no change


def test_distillation_loss_has_the_kl_gradient():
    torch.manual_seed(0)
    student = torch.randn(5, 4, requires_grad=True)
    teacher = torch.randn(5, 4)
    for t in (1.0, 2.0):
        loss = prograd.distillation_loss(student, teacher, t)
        kl = F.kl_div(F.log_softmax(student / t, -1), F.softmax(teacher / t, -1), reduction="batchmean") * t * t
        g1, = torch.autograd.grad(loss, student)
        g2, = torch.autograd.grad(kl, student)
        torch.testing.assert_close(g1, g2)


def test_ctx_init_writes_the_template_words_into_the_last_vectors(clip_model):
    words = "a centered satellite photo of"
    learner = prograd.ProGradPromptLearner(CLASSNAMES, clip_model, init_words=words, n_ctx=8)
    assert learner.ctx.shape[0] == 8 and torch.equal(learner.ctx[:3], torch.zeros_like(learner.ctx[:3]))
    exact = prograd.ProGradPromptLearner(CLASSNAMES, clip_model, init_words=words, n_ctx=5)
    model = coop.CustomCLIP(clip_model, exact)
    teacher = kgcoop.hand_crafted_features(clip_model, CLASSNAMES, words + " {}.")
    with torch.no_grad():  # N_CTX = the word count: the learner's prompt is the teacher's
        torch.testing.assert_close(model.text_features(), teacher, rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="TRAINER.PROGRAD.N_CTX is 4 but CTX_INIT's words"):
        prograd.ProGradPromptLearner(CLASSNAMES, clip_model, init_words=words, n_ctx=4)


def test_one_prograd_step_moves_the_context_by_the_projected_gradient(replica):
    trainer = run_train(*args(replica, replica[2] / "pg", "ProGrad", "--no-train", "TRAINER.PROGRAD.N_CTX", 4))
    ctx = trainer.model.prompt_learner.ctx
    trainer.optim = torch.optim.SGD([ctx], lr=1.0)  # plain SGD: the step is -grad
    torch.manual_seed(0)
    feats = torch.randn(6, trainer.clip_model.visual.output_dim)
    with torch.no_grad():
        teacher = trainer.model.zero_shot(feats)
    label = teacher.argmin(dim=1)  # labels against the teacher: the two gradients conflict
    output = trainer.model(feats)
    g_ce, = torch.autograd.grad(F.cross_entropy(output, label), ctx, retain_graph=True)
    g_kl, = torch.autograd.grad(prograd.distillation_loss(output, teacher, 1.0), ctx)
    assert torch.dot(g_ce.flatten(), g_kl.flatten()) < 0
    unit = g_kl / g_kl.norm()
    expected = g_ce - (g_ce * unit).sum() * unit
    before = ctx.detach().clone()
    trainer.batch_idx, trainer.num_batches = 0, 2  # not the epoch's last batch: no LR step
    summary = trainer.forward_backward({"img": feats, "label": label})
    assert set(summary) == {"xe_loss", "kl_loss", "acc"}  # the original's log keys
    torch.testing.assert_close(before - ctx.detach(), expected, rtol=1e-4, atol=1e-7)


# ---- both through train.py ----------------------------------------------------------------------
CLAP_KEYS = {"prototypes", "base_text_features", "logit_scale"}
MODULE = {"KgCoOp": ("prompt_learner", PROMPT_KEYS), "ProGrad": ("prompt_learner", PROMPT_KEYS),
          "CLAP": ("adapter", CLAP_KEYS)}
FAST = {"CLAP": ("TRAINER.CLAP.AUG_VIEWS", 3)}


@pytest.mark.parametrize("trainer, opts", [
    ("KgCoOp", ("TRAINER.KGCOOP.CTX_INIT", True, "TRAINER.KGCOOP.W", 8.0)),
    ("ProGrad", ("TRAINER.PROGRAD.CTX_INIT", True, "TRAINER.PROGRAD.N_CTX", 8)),
    ("CLAP", ("TRAINER.CLAP.AUG_VIEWS", 3)),
])
def test_trains_and_evaluates_through_train_py_on_a_replica(replica, trainer, opts):
    tmp = replica[2]
    out = tmp / "out"
    run = run_train(*args(replica, out, trainer, *opts))
    trained = accuracies(out / "log.txt")
    assert len(trained) == 1 and run.feature_store is not None  # trained on cached features
    module, keys = MODULE[trainer]
    checkpoint = load_checkpoint(os.path.join(out, module, "model.pth.tar-3"))
    assert set(checkpoint["state_dict"]) == keys and checkpoint["epoch"] == 3
    log = (out / "log.txt").read_text()
    assert ("xe_loss" in log and "kl_loss" in log) if trainer == "ProGrad" else " loss " in log
    run_train(*args(replica, tmp / "eval", trainer, "--model-dir", out, "--load-epoch", 3, "--eval-only", *opts))
    assert accuracies(tmp / "eval" / "log.txt") == trained


@pytest.mark.parametrize("trainer", ["KgCoOp", "ProGrad", "CLAP"])
def test_sigkill_then_the_same_command_ends_as_an_uninterrupted_run(replica, trainer):
    tmp = replica[2]
    reference, out = tmp / "reference", tmp / "killed"
    module, keys = MODULE[trainer]
    every_epoch = ("TRAIN.RESUME_SAVE_SECONDS", 0, *FAST.get(trainer, ()))
    run_train(*args(replica, reference, trainer, *every_epoch))
    target = f"trainers.{trainer.lower()}.{trainer}:forward_backward"
    proc = subprocess.run([sys.executable, "-c", CHILD.format(root=ROOT), target, "5",
                           *map(str, args(replica, out, trainer, *every_epoch))],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    run_train(*args(replica, out, trainer, *every_epoch))
    assert last_epoch(out, module) == last_epoch(reference, module) == 3
    resumed = (out / "log.txt").read_text().rsplit("new run in this folder", 1)[1]
    assert "Previous epoch: 2" in resumed and "epoch [2/3]" not in resumed
    assert accuracies(out / "log.txt")[-1] == accuracies(reference / "log.txt")[-1]
    state = [final_state(d, module) for d in (reference, out)]
    assert all(torch.equal(state[0][k], state[1][k]) for k in keys)


@pytest.mark.parametrize("trainer, opts, message", [
    ("KgCoOp", ("TRAINER.KGCOOP.W", -1.0), "TRAINER.KGCOOP.W must be 0 or more"),
    ("KgCoOp", ("TRAINER.KGCOOP.PREC", "fp8"), "TRAINER.KGCOOP.PREC must be one of fp16, fp32, amp, got 'fp8'."),
    ("ProGrad", ("TRAINER.PROGRAD.T", 0.0), "TRAINER.PROGRAD.T must be above 0"),
    ("ProGrad", ("TRAINER.PROGRAD.CLASS_TOKEN_POSITION", "ends"), "TRAINER.PROGRAD.CLASS_TOKEN_POSITION must be one of"),
    ("ProGrad", ("TRAINER.PROGRAD.CTX_INIT", True, "TRAINER.PROGRAD.N_CTX", 4),
     "TRAINER.PROGRAD.N_CTX is 4 but CTX_INIT's words 'a centered satellite photo of' need at least 5"),
    ("CLAP", ("TRAINER.CLAP.INIT", "TR"), "TRAINER.CLAP.INIT must be one of ZS, RANDOM, got 'TR' (the original's"),
    ("CLAP", ("TRAINER.CLAP.CONSTRAINT", "l2_adaptative"), "TRAINER.CLAP.CONSTRAINT must be none, l2 or cosine"),
    ("CLAP", ("TRAINER.CLAP.AUG_VIEWS", 0), "TRAINER.CLAP.AUG_VIEWS must be at least 1, got 0."),
    ("LPPlusPlus", ("TRAINER.LP_PLUS_PLUS.ALPHA_EVERY", 0), "TRAINER.LP_PLUS_PLUS.ALPHA_EVERY must be a whole number"),
])
def test_bad_values_are_one_sentence(replica, trainer, opts, message):
    with pytest.raises(ConfigError) as info:
        run_train(*args(replica, replica[2] / "bad", trainer, *opts))
    assert message in str(info.value) and "\n" not in str(info.value)


# ---- protocols and configs ----------------------------------------------------------------------
def config_path(trainer, stem):
    return os.path.join(ROOT, "configs", "trainers", trainer, stem + ".yaml")


@pytest.mark.parametrize("dataset, shots, stem", [
    ("caltech101", 1, "rn50_ep50"), ("caltech101", 2, "rn50_ep100"), ("caltech101", 4, "rn50_ep100"),
    ("caltech101", 8, "rn50"), ("caltech101", 16, "rn50"), ("imagenet", 16, "rn50_ep50"),
    ("eurosat", 4, "rn50_ep100"), ("eurosat", 8, "rn50_lambda0.8"), ("dtd", 16, "rn50_lambda0.8"),
    ("oxford_flowers", 16, "rn50_lambda0.8"), ("oxford_pets", 16, "rn50"),
])
def test_prograd_per_shot_and_per_dataset_rules(dataset, shots, stem):
    assert prograd.ProGrad.protocol.config(dataset, shots, "rn50") == stem
    cfg = trainers.extend_cfg(get_cfg_default())
    merge_from_file(cfg, config_path("ProGrad", stem))
    assert cfg.OPTIM.MAX_EPOCH == coop_epochs(dataset, shots)
    assert cfg.TRAINER.PROGRAD.LAMBDA == (0.8 if stem == "rn50_lambda0.8" else 1.0)
    assert cfg.TRAINER.PROGRAD.CTX_INIT is True and cfg.TRAINER.PROGRAD.T == 1.0
    assert (cfg.OPTIM.NAME, cfg.OPTIM.LR, cfg.DATALOADER.TRAIN_X.BATCH_SIZE) == ("sgd", 0.002, 32)
    with pytest.raises(ValueError, match="RN50 configs only"):
        prograd.ProGrad.protocol.config(dataset, shots, "vit_b16")


@pytest.mark.parametrize("family, stem, backbone", [("rn50", "rn50_ep100", "RN50"),
                                                    ("vit_b16", "vit_b16_ep100_ctxv1", "ViT-B/16")])
def test_kgcoop_config_and_variant(family, stem, backbone):
    protocol = kgcoop.KgCoOp.protocol
    assert protocol.config("dtd", 4, family) == stem and protocol.label == "KgCoOp"
    assert set(protocol.evaluations) == {"base2new", "dg"}
    cfg = trainers.extend_cfg(get_cfg_default())
    merge_from_file(cfg, config_path("KgCoOp", stem))
    merge_from_list(cfg, list(protocol.variants[0].opts))
    assert (cfg.OPTIM.NAME, cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH, cfg.DATALOADER.TRAIN_X.BATCH_SIZE) == ("sgd", 0.002, 100, 128)
    assert cfg.MODEL.BACKBONE.NAME == backbone
    c = cfg.TRAINER.KGCOOP
    assert (c.CTX_INIT, c.N_CTX, c.W, c.CSC, c.CLASS_TOKEN_POSITION) == (True, 4, 8.0, False, "end")


def test_prograd_variant_opts_are_its_keys():
    cfg = trainers.extend_cfg(get_cfg_default())
    merge_from_list(cfg, list(prograd.ProGrad.protocol.variants[0].opts))
    assert (cfg.TRAINER.PROGRAD.N_CTX, cfg.TRAINER.PROGRAD.CSC) == (16, False)
    with open(config_path("ProGrad", "rn50")) as f:
        assert yaml.safe_load(f)["TRAINER"]["PROGRAD"] == {"CTX_INIT": True, "T": 1.0}


# ---- CLAP ---------------------------------------------------------------------------------------
def test_class_adaptive_weights_by_hand():
    # class 0: samples with p_0 = 0.8 and 0.4 -> 0.6; class 1: one sample with p_1 = 0.3 -> 0.3
    probs = torch.tensor([[0.8, 0.2], [0.4, 0.6], [0.7, 0.3]])
    logits, labels = probs.log(), torch.tensor([0, 0, 1])
    torch.testing.assert_close(clap.class_adaptive_weights(logits, labels, 2), torch.tensor([0.6, 0.3]))
    torch.testing.assert_close(clap.class_adaptive_weights(logits, labels, 2, "corrected"), torch.tensor([0.6, 0.3]) * 2 / 0.9)
    torch.testing.assert_close(clap.class_adaptive_weights(logits, labels, 2, "constant"), torch.tensor([0.45, 0.45]))
    assert torch.equal(clap.class_adaptive_weights(logits, labels, 2, "balanced"), torch.ones(2))


def test_constraint_by_hand():
    probe = clap.ClassAdaptiveProbe(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor(0.0))
    probe.alpha_constraint.copy_(torch.tensor([0.5, 2.0]))
    with torch.no_grad():
        probe.prototypes.add_(torch.tensor([[1.0, 1.0], [0.0, -2.0]]))
    # w = [[2, 1], [0, 0]]; l2: (0.5 * 2 + 2.0 * 4) / 2 = 4.5
    assert probe.constraint("l2").item() == pytest.approx(4.5)
    with torch.no_grad():
        probe.prototypes[1] = torch.tensor([3.0, 0.0])  # orthogonal to t_1: 1 - cos = 1
    # cosine: cos(w_0, t_0) = 2 / sqrt(5); (0.5 * (1 - 2 / sqrt(5)) + 2.0 * 1) / 2
    assert probe.constraint("cosine").item() == pytest.approx((0.5 * (1 - 2 / math.sqrt(5)) + 2.0) / 2, abs=1e-6)
    assert clap.parse_constraint("l2_corrected") == ("l2", "corrected")


def test_untrained_probe_is_zero_shot_clip(clip_model):
    base = build_base_text_features(clip_model, CLASSNAMES, "EuroSAT")
    probe = clap.ClassAdaptiveProbe(base, clip_model.logit_scale, "ZS")
    torch.manual_seed(0)
    feats = torch.randn(5, base.shape[1])
    expected = clip_model.logit_scale.exp() * F.normalize(feats, dim=-1) @ F.normalize(base, dim=-1).t()
    torch.testing.assert_close(probe(feats), expected)
    assert probe.constraint("l2").item() == 0.0
    assert set(probe.state_dict()) == CLAP_KEYS  # alpha is recomputed from the training set, not saved


def test_pooled_views_are_a_seeded_permutation_per_epoch():
    feats = torch.arange(3 * 4, dtype=torch.float32).view(3, 4, 1)  # 3 views x 4 images, value = id
    loader = clap.PooledViewsLoader(lambda: feats, torch.tensor([0, 1, 2, 3]), 5, 2, seed=1, device="cpu")
    seen = []
    for epoch in (0, 1, 0):
        loader.set_epoch(epoch)
        batches = list(loader)
        assert [len(b["feat"]) for b in batches] == [5, 5]  # the image loader's batch count, over 12 views
        ids = torch.cat([b["feat"][:, 0] for b in batches]).long()
        assert torch.equal(torch.cat([b["label"] for b in batches]), ids % 4)  # each view keeps its label
        seen.append(ids)
    assert len(set(seen[0].tolist())) == 10 and not torch.equal(seen[0], seen[1]) and torch.equal(seen[0], seen[2])


def test_clap_and_zs_lp_through_train_py(replica):
    tmp = replica[2]
    runs = {c: run_train(*args(replica, tmp / c, "CLAP", "TRAINER.CLAP.AUG_VIEWS", 3, "TRAINER.CLAP.CONSTRAINT", c,
                               "OPTIM.LR", 0.5, "OPTIM.WARMUP_EPOCH", 0)) for c in ("l2", "none")}
    alpha = runs["l2"].model.alpha_constraint
    assert alpha.shape == (10,) and (alpha > 0).all() and (alpha < 1).all()
    assert "Class-adaptive constraint weights" in (tmp / "l2" / "log.txt").read_text()
    gap = {c: (r.model.prototypes - r.model.base_text_features).pow(2).sum(-1) for c, r in runs.items()}
    assert (gap["l2"] * alpha).sum() < (gap["none"] * alpha).sum()  # the penalty holds the prototypes nearer t
    assert len(runs["l2"].train_loader_x) == 2  # 20 images, batch 8: the image loader's 2 batches per epoch


def test_clap_protocol_and_config():
    protocol = clap.CLAP.protocol
    assert protocol.label == "CLAP" and [v.label for v in protocol.variants] == ["", "ZS-LP"]
    cfg = trainers.extend_cfg(get_cfg_default())
    merge_from_file(cfg, config_path("CLAP", protocol.config))
    for variant in protocol.variants:
        merge_from_list(cfg, list(variant.opts))
    assert (cfg.OPTIM.NAME, cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH, cfg.OPTIM.WEIGHT_DECAY) == ("sgd", 0.1, 300, 0.0)
    assert cfg.DATALOADER.TRAIN_X.BATCH_SIZE == 256 and cfg.TRAINER.CLAP.AUG_VIEWS == 20


# ---- LP++ ---------------------------------------------------------------------------------------
def test_lp_plus_plus_step_sizes_and_init_by_hand():
    f = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    y = torch.tensor([0, 0, 1])
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # [D, K]: t_0 = e_0, t_1 = e_1
    torch.testing.assert_close(lpp.class_sums(f, y, 2), torch.tensor([[1.6, 0.8], [0.0, 1.0]]))  # sums, not means
    # F^T F = [[1.36, 0.48], [0.48, 1.64]]: eigenvalues 1.5 -+ sqrt(0.14^2 + 0.48^2) = 1.0, 2.0 -> 4 * 3 / 2
    assert lpp.lr_w(f) == pytest.approx(6.0)
    # sum_i (f_i . t_k)^2: k=0 1 + 0.36 = 1.36, k=1 0.64 + 1 = 1.64 -> 3 / (4 * 1.64)
    assert lpp.lr_alpha(f, text) == pytest.approx(3 / (4 * 1.64))
    # class 0: mean(f . t_0) = 0.8; class 1: f . t_1 = 1 -> 250 * mean(0.8, 1.0)
    assert lpp.init_alpha(f, y, text, 2) == pytest.approx(225.0)


def test_lp_plus_plus_alpha_steps_with_the_summed_gradient():
    """Every ALPHA_EVERY epochs alpha moves by -lr_alpha x (all of its gradients so far), as the
    original, which never zeroes alpha.grad; between those epochs it does not move."""
    torch.manual_seed(0)
    f = F.normalize(torch.randn(12, 4), dim=-1)
    y = torch.arange(12) % 3
    text = F.normalize(torch.randn(4, 3), dim=0)
    bias = torch.zeros(3)
    runs = {e: lpp.fit_lp_plus_plus(f, y, f, y, text, 3, e, bias, alpha_every=2) for e in (1, 2, 3, 4)}
    alphas = [runs[e]["final"][2] for e in (1, 2, 3, 4)]
    start = torch.full((3,), runs[1]["alpha_init"])
    assert torch.equal(alphas[0], start) and torch.equal(alphas[2], alphas[1])

    def grad_of_alpha(state):
        w, b, a = (t.clone().requires_grad_(True) for t in state)
        F.cross_entropy(lpp.logits(f, w, b, a, text), y).backward()
        return a.grad

    g = [grad_of_alpha(runs[e]["final"]) for e in (1, 2, 3)]
    g0 = grad_of_alpha((lpp.class_sums(f, y, 3), bias, start))  # epoch 1 sees the initial state
    step = runs[1]["lr_alpha"]
    torch.testing.assert_close(alphas[1], start - step * (g0 + g[0]))
    torch.testing.assert_close(alphas[3], alphas[1] - step * (g0 + g[0] + g[1] + g[2]))  # never reset


def test_lp_plus_plus_keeps_the_best_val_epoch():
    torch.manual_seed(1)
    f = F.normalize(torch.randn(20, 6), dim=-1)
    y = torch.arange(20) % 4
    text = F.normalize(torch.randn(6, 4), dim=0)
    fit = lpp.fit_lp_plus_plus(f[:12], y[:12], f[12:], y[12:], text, 4, 30, torch.zeros(4))
    accs = fit["val_acc"]
    best = max(accs)
    assert fit["best_epoch"] == max(i for i, a in enumerate(accs) if a == best)  # ties: the later epoch
    again = lpp.fit_lp_plus_plus(f[:12], y[:12], f[12:], y[12:], text, 4, fit["best_epoch"] + 1, torch.zeros(4))
    for kept, final in zip(fit["best"], again["final"]):
        torch.testing.assert_close(kept, final)


def test_lp_plus_plus_through_train_py(replica):
    tmp = replica[2]
    common = args(replica, tmp / "lpp", "LPPlusPlus", "OPTIM.MAX_EPOCH", 20)
    run = run_train(*common)
    acc = accuracies(tmp / "lpp" / "log.txt")
    checkpoint = load_checkpoint(os.path.join(tmp, "lpp", "lp_plus_plus", "model.pth.tar-1"))
    assert set(checkpoint["state_dict"]) == {"weight", "bias", "alpha", "text_weights", "best_epoch"}
    assert 1 <= int(checkpoint["state_dict"]["best_epoch"]) <= 20 and run.feature_store is not None
    # the finished command run again evaluates the saved fit, it does not fit again
    again = run_train(*common)
    assert accuracies(tmp / "lpp" / "log.txt") == acc * 2
    torch.testing.assert_close(again.model.weight, run.model.weight, rtol=0, atol=0)
    run_train(*args(replica, tmp / "ev", "LPPlusPlus", "--model-dir", tmp / "lpp", "--load-epoch", 1, "--eval-only"))
    assert accuracies(tmp / "ev" / "log.txt") == acc
    assert lpp.LPPlusPlus.protocol.label == "LP++"
    cfg = trainers.extend_cfg(get_cfg_default())
    merge_from_file(cfg, config_path("LPPlusPlus", lpp.LPPlusPlus.protocol.config))
    assert cfg.OPTIM.MAX_EPOCH == 300 and tuple(cfg.INPUT.RRCROP_SCALE) == (0.5, 1.0)


@pytest.mark.parametrize("trainer, group", [("KgCoOp", "KGCOOP"), ("ProGrad", "PROGRAD"), ("CLAP", "CLAP")])
def test_amp_trains(replica, trainer, group):
    """PREC amp (autocast + GradScaler; the originals' amp paths fail or drop their extra term) takes
    finite steps that move the trained tensor."""
    opts = (f"TRAINER.{group}.PREC", "amp", "OPTIM.WARMUP_EPOCH", 0, *FAST.get(trainer, ()))
    trained = run_train(*args(replica, replica[2] / "amp", trainer, *opts))
    fresh = run_train(*args(replica, replica[2] / "fresh", trainer, "--no-train", *opts))
    name = "prototypes" if trainer == "CLAP" else "prompt_learner.ctx"
    after, before = (dict(t.model.named_parameters())[name] for t in (trained, fresh))
    assert torch.isfinite(after).all() and (after - before).abs().max() > 1e-4
