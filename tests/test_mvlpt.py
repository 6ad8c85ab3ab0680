"""MVLPT (trainers/mvlpt.py) and multitask data (engine/data/multitask.py) on tiny CLIPs, CPU.

Invariants: no prompt, or CoOp's context initialised from "a photo of a", gives zero-shot
CLIP's logits; deep visual prompts reach every block; a multitask sample's loss ignores other
tasks' logits; evaluation scores each task on its own classes and best_val sees the average;
a target run started from a source run holds the source's prompt; a killed run resumes to the
same result; a source run over the 11 CoOp dataset replicas works; bad input is one sentence.
"""
import json
import random
import re
import os
import signal
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from yacs.config import CfgNode as CN

import clip
from clip.model import CLIP
from dataset_replicas import build_replica, elevater_coco, elevater_iris
from engine.config import get_cfg_default
from engine.data.multitask import MultiTaskClassification, own_task_logits
from engine.errors import ConfigError, UserError
from engine.utils.checkpoint import load_checkpoint
from helpers import ROOT, accuracies, run_train, tiny_clip, write_tiny_config
from trainers import extend_cfg, mvlpt

CLASSNAMES = ["cat", "dog", "sea_lion", "bird"]
COOP_11 = ["ImageNet", "Caltech101", "Food101", "StanfordCars", "OxfordPets", "OxfordFlowers", "FGVCAircraft",
           "SUN397", "DescribableTextures", "EuroSAT", "UCF101"]


def mvlpt_cfg(**keys):
    """TRAINER.MVLPT defaults with ``keys`` ("VPT.N_CTX": 2 ...) set."""
    cfg = extend_cfg(get_cfg_default())
    for key, value in keys.items():
        node = cfg.TRAINER.MVLPT
        *path, leaf = key.split(".")
        for part in path:
            node = node[part]
        node[leaf] = value
    return cfg.TRAINER.MVLPT


@pytest.fixture
def clip_model(tmp_path):
    model, _ = clip.load(tiny_clip(tmp_path, "vit"), device="cpu")
    return model.float().eval()


def deep_vit():
    """A 3-block ViT CLIP (the fixture's has one block, too few to tell layers apart)."""
    torch.manual_seed(0)
    return CLIP(32, 32, 3, 64, 8, 77, 49408, 64, 1, 1).float().eval()


def zero_shot_logits(model, images, texts):
    with torch.no_grad():
        image = model.encode_image(images)
        text = model.encode_text(clip.tokenize(texts))
    image = image / image.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    return model.logit_scale.exp() * image @ text.t()


@pytest.mark.parametrize("keys", [
    {},  # MVPT with 0 tokens and no text context: CLIP with "a photo of a {}."
    {"COOP.N_CTX": 16, "COOP.CTX_INIT": "a photo of a", "COOP.CLASS_TOKEN_POSITION": "end"},
    {"COOP.CTX_INIT": "a photo of a", "COOP.CLASS_TOKEN_POSITION": "end", "PROJECT_METHOD": "identity"},
])
@pytest.mark.parametrize("cut", [False, True])
def test_no_prompt_or_initial_context_gives_zero_shot_logits(clip_model, keys, cut):
    torch.manual_seed(0)
    images = torch.randn(5, 3, 32, 32)
    learner = mvlpt.MultitaskVLPromptLearner(mvlpt_cfg(**keys), CLASSNAMES, clip_model, cut_contextlen=cut)
    model = mvlpt.CustomCLIP(clip_model, learner).eval()
    with torch.no_grad():
        logits = model(images)
        from_features = model(clip_model.encode_image(images))  # the cached-feature path
    expected = zero_shot_logits(clip_model, images, [f"a photo of a {c.replace('_', ' ')}." for c in CLASSNAMES])
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(from_features, expected, rtol=1e-4, atol=1e-4)
    assert learner.token_prefix.shape[1] + learner.token_suffix.shape[1] + learner.coop_n_ctx == (
        77 if not cut else clip.tokenize("a photo of a sea lion.")[0].argmax().item() + 1)


def test_deep_visual_prompts_reach_every_block():
    model = deep_vit()
    learner = mvlpt.MultitaskVLPromptLearner(mvlpt_cfg(**{"VPT.N_CTX": 3}), CLASSNAMES, model)
    encoder = mvlpt.ImageEncoder(model.visual, learner).eval()
    assert learner.vpt_embeddings_deep.shape == (2, 3, 64)  # one prompt per block after the first
    torch.manual_seed(1)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        base = encoder(images, learner.vpt_embeddings, learner.vpt_embeddings_deep)
        assert not torch.allclose(base, model.encode_image(images), atol=1e-4)
        for k in range(3):  # block 0's prompt is vpt_embeddings, block k's is vpt_embeddings_deep[k - 1]
            shallow, deep = learner.vpt_embeddings.clone(), learner.vpt_embeddings_deep.clone()
            # a random change (a constant shift would vanish in the blocks' LayerNorm)
            (shallow if k == 0 else deep[k - 1]).add_(torch.randn(3, 64))
            changed = encoder(images, shallow, deep)
            assert (changed - base).abs().max() > 1e-3, f"block {k}'s prompt does not reach the output"
        # removing the prompts gives CLIP's own image features back
        torch.testing.assert_close(encoder(images), model.encode_image(images))


def test_deep_prompts_replace_the_previous_blocks_prompt_outputs():
    """Hand-unrolled forward: block k runs on [CLS, prompt_k, patches] (the original's rule)."""
    model = deep_vit()
    learner = mvlpt.MultitaskVLPromptLearner(mvlpt_cfg(**{"VPT.N_CTX": 2}), CLASSNAMES, model)
    encoder = mvlpt.ImageEncoder(model.visual, learner).eval()
    images = torch.randn(2, 3, 32, 32)
    v = model.visual
    with torch.no_grad():
        x = v.conv1(images).flatten(2).permute(0, 2, 1)
        x = torch.cat([v.class_embedding.expand(2, 1, -1), x], dim=1) + v.positional_embedding
        x = v.ln_pre(x)
        prompts = [learner.vpt_embeddings[0]] + list(learner.vpt_embeddings_deep)
        for block, prompt in zip(v.transformer.resblocks, prompts):
            x = torch.cat([x[:, :1], prompt.expand(2, -1, -1), x[:, 3:] if x.shape[1] > 17 else x[:, 1:]], dim=1)
            x = block(x.permute(1, 0, 2)).permute(1, 0, 2)
        expected = v.ln_post(x[:, 0]) @ v.proj
        torch.testing.assert_close(encoder(images, learner.vpt_embeddings, learner.vpt_embeddings_deep), expected)


def test_projected_visual_prompts_learn_in_their_own_width():
    model = deep_vit()
    learner = mvlpt.MultitaskVLPromptLearner(mvlpt_cfg(**{"VPT.N_CTX": 2, "VPT.PROJECT": 8}), CLASSNAMES, model)
    assert learner.vpt_embeddings.shape == (1, 2, 8) and learner.vpt_embeddings_deep.shape == (2, 2, 8)
    encoder = mvlpt.ImageEncoder(model.visual, learner)
    out = encoder(torch.randn(2, 3, 32, 32), learner.vpt_embeddings, learner.vpt_embeddings_deep)
    out.sum().backward()
    assert out.shape == (2, 32) and learner.vpt_proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("method", ["transformer", "mlp", "identity"])
def test_upt_prompt_feeds_both_towers(method):
    model = deep_vit()
    learner = mvlpt.MultitaskVLPromptLearner(
        mvlpt_cfg(**{"VPT.N_CTX": 2, "COOP.N_CTX": 2, "PROJECT_METHOD": method, "PROJECT_DIM": 16}), CLASSNAMES, model)
    coop, vpt, deep = learner.forward_mvlpt_proj(torch.float32)
    assert coop.shape == (2, 64) and vpt.shape == (1, 2, 64) and deep.shape == (2, 2, 64)
    if method == "identity":  # two independent prompts, as the original's identity method
        assert coop is learner.ctx and vpt is learner.vpt_embeddings
        return
    # the shared projection is learned: both towers' prompts depend on it
    (coop.sum() + vpt.sum() + deep.sum()).backward()
    assert learner.mvlpt_proj_ctx_coop_pre.weight.grad.abs().sum() > 0
    assert learner.mvlpt_proj_ctx_vpt_post.weight.grad.abs().sum() > 0


def test_loss_covers_only_the_samples_own_task():
    ranges = [(0, 2), (2, 5)]
    label_to_task = torch.tensor([0, 0, 1, 1, 1])
    labels = torch.tensor([1, 3])  # one sample of each task
    logits = torch.tensor([[0.2, 1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.1, 2.0, -1.0]])
    louder = logits.clone()
    louder[0, 2:] = 50.0  # task 1's logits shout on task 0's sample, and the reverse
    louder[1, :2] = 50.0
    own = F.cross_entropy(own_task_logits(logits, labels, label_to_task, ranges), labels)
    own_louder = F.cross_entropy(own_task_logits(louder, labels, label_to_task, ranges), labels)
    by_hand = (F.cross_entropy(logits[:1, :2], labels[:1]) + F.cross_entropy(logits[1:, 2:], labels[1:] - 2)) / 2
    torch.testing.assert_close(own, by_hand)
    torch.testing.assert_close(own_louder, by_hand)
    assert F.cross_entropy(louder, labels) > F.cross_entropy(logits, labels) + 10  # the union softmax would see them


def test_per_task_accuracy_on_own_classes_and_average_first():
    cfg = get_cfg_default()
    evaluator = MultiTaskClassification(cfg, ["A", "B"], [(0, 2), (2, 5)])
    # sample 0 (task A, label 1): right within A although class 4 of task B scores higher
    logits = torch.tensor([[0.0, 1.0, 0.0, 0.0, 9.0], [0.0, 1.0, 0.0, 0.0, 0.0],
                           [9.0, 0.0, 3.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0, 0.0]])
    labels = torch.tensor([1, 0, 2, 4])
    evaluator.process(logits, labels)
    results = evaluator.evaluate()
    assert list(results)[0] == "average"
    assert results["accuracy/A"] == 50.0 and results["accuracy/B"] == 50.0 and results["average"] == 50.0
    by_b = MultiTaskClassification(cfg, ["A", "B"], [(0, 2), (2, 5)], evalkey="B")
    by_b.process(logits[2:], labels[2:])
    by_b.process(logits[:1], labels[:1])
    assert list(by_b.evaluate().items())[0] == ("B", 50.0)
    with pytest.raises(ConfigError, match="DATASET.MULTITASK_EVALKEY is 'C'; use 'average' or one of the tasks A, B."):
        MultiTaskClassification(cfg, ["A", "B"], [(0, 2), (2, 5)], evalkey="C")


# ---- through train.py on replicas ------------------------------------------------------------
KINDS = {  # the original scripts' selection, scaled down
    "CoOp": ("TRAINER.MVLPT.VPT.N_CTX", 0, "TRAINER.MVLPT.COOP.N_CTX", 4, "TRAINER.CUT_CONTEXTLEN", True),
    "VPT": ("TRAINER.MVLPT.VPT.N_CTX", 2, "TRAINER.MVLPT.COOP.N_CTX", 0),
    "UPT": ("TRAINER.MVLPT.VPT.N_CTX", 2, "TRAINER.MVLPT.COOP.N_CTX", 2, "TRAINER.MVLPT.PROJECT_DIM", 16,
            "TRAINER.CUT_CONTEXTLEN", True),
}
SOURCES = "EuroSAT,DescribableTextures"


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mvlpt")
    root = str(tmp / "data")
    for name in COOP_11:
        build_replica(name, root)
    cfg = write_tiny_config(tmp / "cfg.yaml", tiny_clip(tmp, "vit"), dataset="", epochs=2, lr=0.05, batch=4)
    return {"root": root, "cfg": cfg, "tmp": tmp}


def mvlpt_args(assets, out, kind, dataset=SOURCES, *opts, multi=True, shots=2, flags=()):
    return ["--root", assets["root"], "--seed", 1, "--trainer", "MVLPT", "--config-file", assets["cfg"],
            "--output-dir", out, "--dataset", dataset, "--shots", shots, "--dataset-coop", *flags,
            *(["--multi-task"] if multi else []), *KINDS[kind], "TRAINER.MVLPT.COOP.CLASS_TOKEN_POSITION", "middle",
            "TEST.FINAL_MODEL", "best_val", "TRAINER.MVLPT.PREC", "fp32",
            "FEATURE_CACHE.DIR", os.path.join(assets["tmp"], "features"), *opts]


@pytest.mark.parametrize("kind", list(KINDS))
def test_multitask_source_then_target_transfer(assets, tmp_path, kind):
    source = tmp_path / "source"
    trainer = run_train(*mvlpt_args(assets, source, kind))
    assert (trainer.feature_store is None) == (kind != "CoOp")  # visual prompts train end to end
    ds = trainer.dm.dataset
    assert ds.task_names == ["EuroSAT", "DescribableTextures"] and ds.task_ranges == [(0, 10), (10, 14)]
    assert {d.domain for d in ds.train_x} == {0, 1} and trainer.multi_task
    text = (source / "log.txt").read_text()
    assert "=> result on EuroSAT" in text and "=> result on DescribableTextures" in text
    best = load_checkpoint(os.path.join(source, "prompt_learner", "model-best.pth.tar"))
    assert isinstance(best["val_result"], float)  # the average over tasks selected it
    assert "Feature cache off: visual prompts" in text if kind != "CoOp" else "Feature cache:" in text

    # target: one dataset the source did not train on, prompt from the source's best model
    loaded = run_train(*mvlpt_args(assets, tmp_path / "target", kind, "OxfordPets", multi=False,
                                   flags=("--no-train", "--model-dir", source)))
    fresh = run_train(*mvlpt_args(assets, tmp_path / "fresh", kind, "OxfordPets", multi=False, flags=("--no-train",)))
    src_state = best["state_dict"]
    tgt = loaded.model.prompt_learner
    for key in ("ctx", "vpt_embeddings", "vpt_embeddings_deep"):
        if src_state.get(key) is not None:
            torch.testing.assert_close(getattr(tgt, key), src_state[key])
    assert tgt.token_prefix.shape[0] == loaded.num_classes == 4  # the target's own classes
    # its first logits: the source prompt on the target classes, not an uninitialised prompt's
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        out_loaded, out_fresh = loaded.model(images), fresh.model(images)
        fresh.model.prompt_learner.load_state_dict(loaded.adapt_state_dict("prompt_learner", src_state))
        torch.testing.assert_close(out_loaded, fresh.model(images))
    assert (out_loaded - out_fresh).abs().max() > 1e-4


def test_source_run_over_the_11_coop_replicas(assets, tmp_path):
    out = tmp_path / "out"
    # the workflow's setting: ImageNet's val split is its test split, selected on by best_val on purpose
    trainer = run_train(*mvlpt_args(assets, out, "CoOp", ",".join(COOP_11), shots=1), "OPTIM.MAX_EPOCH", 1,
                        "TEST.ALLOW_VAL_IS_TEST", True)
    assert trainer.dm.dataset.task_names == COOP_11
    assert trainer.num_classes == sum(b - a for a, b in trainer.dm.dataset.task_ranges)
    text = (out / "log.txt").read_text()
    assert all(f"=> result on {name}" in text for name in COOP_11)
    assert "=> average over 11 tasks" in text
    assert "WARNING: TEST.FINAL_MODEL is best_val and task ImageNet's val split is its test split" in text


def test_union_label_space_when_not_per_task(assets, tmp_path):
    """DATASET.MULTITASK_LABEL_PERTASK False: the original's default, one softmax over every class."""
    per_task = run_train(*mvlpt_args(assets, tmp_path / "a", "CoOp"))
    union = run_train(*mvlpt_args(assets, tmp_path / "b", "CoOp", SOURCES, "DATASET.MULTITASK_LABEL_PERTASK", False))
    assert not torch.allclose(per_task.model.prompt_learner.ctx, union.model.prompt_learner.ctx)


CHILD = r"""
import os, signal, sys
sys.path.insert(0, {root!r})
from trainers.mvlpt import MVLPT
step = MVLPT.forward_backward
def forward_backward(self, batch):
    if (self.epoch, self.batch_idx) == (1, 1):  # epoch 2, batch 2: after epoch 1's checkpoint
        os.kill(os.getpid(), signal.SIGKILL)
    return step(self, batch)
MVLPT.forward_backward = forward_backward
import train
train.main(sys.argv[1:])
"""


def test_sigkill_then_the_same_command_resumes_to_the_same_result(assets, tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    opts = ("TRAIN.CHECKPOINT_FREQ", 1)
    run_train(*mvlpt_args(assets, full, "VPT", SOURCES, *opts))
    argv = [str(a) for a in mvlpt_args(assets, cut, "VPT", SOURCES, *opts)]
    proc = subprocess.run([sys.executable, "-c", CHILD.format(root=ROOT), *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (cut / "prompt_learner" / "checkpoint").read_text().strip() == "model.pth.tar-1"
    run_train(*argv)
    done = load_checkpoint(os.path.join(cut, "prompt_learner", "model.pth.tar-2"))["state_dict"]
    reference = load_checkpoint(os.path.join(full, "prompt_learner", "model.pth.tar-2"))["state_dict"]
    for key in ("vpt_embeddings", "vpt_embeddings_deep"):
        torch.testing.assert_close(done[key], reference[key])
    assert accuracies(cut / "log.txt")[-1] == accuracies(full / "log.txt")[-1]


@pytest.mark.parametrize("opts, error, message", [
    (("TRAINER.MVLPT.PROJECT_METHOD", "mlpp"), ConfigError,
     "TRAINER.MVLPT.PROJECT_METHOD must be one of identity, mlp, transformer, got 'mlpp'."),
    (("TRAINER.MVLPT.VPT.DEPTH", True), ConfigError, 'Did you mean "TRAINER.MVLPT.VPT.DEEP"?'),
    (("TRAINER.MVLPT.PREC", "fp8"), ConfigError, "TRAINER.MVLPT.PREC must be one of fp16, fp32, amp, got 'fp8'."),
    (("TRAINER.MVLPT.VPT.CTX_INIT", "a photo"), ConfigError, "TRAINER.MVLPT.VPT.CTX_INIT is not supported"),
    (("TRAINER.MVLPT.COCOOP.N_CTX", 2), ConfigError, "COOP and TRAINER.MVLPT.COCOOP contexts cannot both be on"),
    (("TRAINER.MVLPT.VPT.N_CTX", 2, "TRAINER.MVLPT.VPT.PROJECT", 8), ConfigError,
     "TRAINER.MVLPT.VPT.PROJECT cannot be combined with a shared UPT prompt"),
    (("DATASET.MULTITASK_EVALKEY", "Food101"), ConfigError, "DATASET.MULTITASK_EVALKEY is 'Food101'"),
    (("--model-dir", "/nonexistent/source"), UserError, "--model-dir /nonexistent/source does not exist"),
])
def test_bad_input_is_one_sentence(assets, tmp_path, opts, error, message):
    if opts[0].startswith("--"):
        args = mvlpt_args(assets, tmp_path / "bad", "CoOp", flags=opts)
    else:
        args = mvlpt_args(assets, tmp_path / "bad", "CoOp", SOURCES, *opts)
    with pytest.raises(error) as info:
        run_train(*args)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_visual_prompts_on_a_resnet_are_one_sentence(tmp_path):
    model, _ = clip.load(tiny_clip(tmp_path, "resnet"), device="cpu")
    with pytest.raises(ConfigError, match="visual prompts need a ViT backbone"):
        mvlpt.MultitaskVLPromptLearner(mvlpt_cfg(**{"VPT.N_CTX": 2}), CLASSNAMES, model.float())


def test_config_group_has_the_originals_keys():
    m = mvlpt_cfg()
    assert isinstance(m, CN)
    assert set(m) == {"PREC", "PROJECT_METHOD", "PROJECT_DIM", "VPT", "COOP", "COCOOP"}
    assert set(m.VPT) == {"N_CTX", "CSC", "CTX_INIT", "DROPOUT", "PROJECT", "DEEP"}
    assert (m.PROJECT_METHOD, m.PROJECT_DIM, m.VPT.DEEP, m.COOP.CLASS_TOKEN_POSITION) == (
        "transformer", 128, True, "middle")


def test_multitask_enhanced_base_for_taskres_on_an_unseen_target(assets, tmp_path):
    """StrongBase on the sources (MVLPT's data path) writes a strong_base file; TaskRes on a target
    whose classes were not among the sources uses it as its base."""
    common = ("--root", assets["root"], "--seed", 1, "--config-file", assets["cfg"])
    sb_root = tmp_path / "strong_base"
    producer = run_train(*common, "--trainer", "StrongBase", "--output-dir", tmp_path / "sb", "--dataset", SOURCES,
                         "--dataset-coop", "--multi-task", "--shots", 2, "STRONG_BASE.ROOT", sb_root,
                         "FEATURE_CACHE.DIR", os.path.join(assets["tmp"], "features"))
    assert producer.model.pre_projection.shape[1] == 14  # EuroSAT's 10 and DTD's 4 classes
    assert "=> average over 2 tasks" in (tmp_path / "sb" / "log.txt").read_text()
    path = sb_root / SOURCES / "tiny_vit_2shots" / "model.pth.tar"
    weight = load_checkpoint(str(path))["state_dict"]["weight"]
    clip_model, _ = clip.load(tiny_clip(assets["tmp"], "vit"), device="cpu")
    assert (weight - clip_model.text_projection.detach().float().t()).abs().max() > 1e-4  # it was tuned

    target = ("--trainer", "TaskRes", "--dataset", "OxfordPets", "--dataset-coop", "--shots", 2, "--no-train")
    regular = run_train(*common, *target, "--output-dir", tmp_path / "regular")
    enhanced = run_train(*common, *target, "--output-dir", tmp_path / "enhanced", "--enhanced-base", path)
    assert enhanced.num_classes == 4
    assert "Using the enhanced base from" in (tmp_path / "enhanced" / "log.txt").read_text()
    base_r = regular.model.prompt_learner.base_text_features
    base_e = enhanced.model.prompt_learner.base_text_features
    assert base_r.shape == base_e.shape and (base_r - base_e).abs().max() > 1e-4


def test_elevater_tasks_without_dataset_coop(tmp_path):
    """MVLPT's default data path: --dataset names ELEVATER datasets (read by the Elevater class)."""
    root = str(tmp_path / "data")
    elevater_iris(root)
    elevater_coco(root)
    cfg = write_tiny_config(tmp_path / "cfg.yaml", tiny_clip(tmp_path, "vit"), dataset="", epochs=1, batch=4)
    out = tmp_path / "out"
    trainer = run_train("--root", root, "--seed", 1, "--trainer", "MVLPT", "--config-file", cfg, "--output-dir", out,
                        "--dataset", "cifar-10,resisc45_clip", "--multi-task", "--shots", 2,
                        "TRAINER.MVLPT.COOP.N_CTX", 2, "TRAINER.MVLPT.PREC", "fp32")
    ds = trainer.dm.dataset
    assert ds.task_names == ["cifar-10", "resisc45_clip"] and len(ds.task_ranges) == 2
    results = json.loads((out / "results_test.json").read_text())
    assert set(results["tasks"]) == {"cifar-10", "resisc45_clip"} and results["accuracy"] == results["average"]
    assert results["average"] == pytest.approx(accuracies(out / "log.txt")[-1], abs=0.05)  # the log rounds


def dassl_draw(rng, items, k):
    """Dassl's generate_fewshot_dataset, read from its documentation: group by label in first-appearance
    order, then ``random.sample(group, k)`` per label (the whole group when it is smaller)."""
    groups = {}
    for item in items:
        groups.setdefault(item.label, []).append(item)
    return [x for group in groups.values() for x in (rng.sample(group, k) if len(group) >= k else group)]


def multitask_cfg(root, names, mode, seed=1, shots=2):
    import datasets  # noqa: F401  (registers the datasets)
    cfg = get_cfg_default()
    cfg.DATASET.ROOT = root
    cfg.DATASET.DATASET = names
    cfg.DATASET.COOP = True
    cfg.DATASET.MULTITASK = True
    cfg.DATASET.NUM_SHOTS = shots
    cfg.DATASET.MULTITASK_FEWSHOT_RNG = mode
    cfg.SEED = seed
    return cfg


def paths(items):
    return [os.path.basename(os.path.dirname(d.impath)) + "/" + os.path.basename(d.impath) for d in items]


@pytest.mark.parametrize("seed", [1, 2])
def test_global_fewshot_rng_reproduces_the_originals_draws(tmp_path, seed):
    """The original seeds Python's random once (SEED) and builds the tasks in --dataset order, each
    drawing train at K then val at min(K, 4) from it; the key reproduces that, the default does not."""
    from engine.data.multitask import build_multitask_dataset
    root = str(tmp_path / "data")
    names = ["OxfordPets", "DescribableTextures", "EuroSAT"]
    for name in names:
        build_replica(name, root)
    full = {}  # each task's whole train and val lists, the sampler's input
    for name in names:
        ds = build_multitask_dataset(multitask_cfg(root, name, "per_task", seed, shots=-1))
        full[name] = (ds.train_x, ds.val)
    rng = random.Random(seed)
    expected_train, expected_val = [], []
    for name in names:
        expected_train += paths(dassl_draw(rng, full[name][0], 2))
        expected_val += paths(dassl_draw(rng, full[name][1], 2))
    ds = build_multitask_dataset(multitask_cfg(root, ",".join(names), "global", seed))
    assert paths(ds.train_x) == expected_train and paths(ds.val) == expected_val
    cached = [f for folder, _, files in os.walk(root) if folder.endswith("split_fewshot") for f in files]
    assert cached == []  # a draw that depends on the tasks before it is not cached per (K, seed)

    per_task = build_multitask_dataset(multitask_cfg(root, ",".join(names), "per_task", seed))
    alone = build_multitask_dataset(multitask_cfg(root, "EuroSAT", "per_task", seed))
    start = per_task.task_ranges[2][0]
    euro = [d for d in per_task.train_x if d.label >= start]
    assert paths(euro) == paths(alone.train_x)  # ours: a task's sample is its single-task sample
    assert paths([d for d in ds.train_x if d.label >= start]) != paths(alone.train_x)  # the original's depends


def test_fewshot_rng_key_is_checked(tmp_path):
    from engine.data.multitask import build_multitask_dataset
    with pytest.raises(ConfigError, match="DATASET.MULTITASK_FEWSHOT_RNG is 'shared'; use 'per_task'"):
        build_multitask_dataset(multitask_cfg(str(tmp_path), "EuroSAT", "shared"))


ORIGINAL = json.load(open(os.path.join(ROOT, "tests", "data", "mvlpt_original_configs.json")))
# DATASET.MULTITASK_LABEL_PERTASK: ours defaults to the own-task loss (README, deliberate differences)
OUR_DEFAULTS = {"DATASET.MULTITASK_LABEL_PERTASK": True}


def nested(flat):
    out = {}
    for key, value in flat.items():
        node = out
        *path, leaf = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def lookup(cfg, key):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


@pytest.mark.parametrize("name", sorted(ORIGINAL["files"]))
def test_every_original_config_file_loads_with_its_values(tmp_path, name, caplog):
    """Each of the original's configs/trainers/MVLPT/*.yaml (keys and values stored from its files)."""
    import yaml
    from engine.config import check_cfg, merge_from_file
    path = tmp_path / name
    path.write_text(yaml.safe_dump(nested(ORIGINAL["files"][name])))
    cfg = extend_cfg(get_cfg_default())
    merge_from_file(cfg, str(path))
    check_cfg(cfg)
    mvlpt.check_mvlpt_cfg(cfg)
    for key, value in ORIGINAL["files"][name].items():
        expected = CN._decode_cfg_value(value) if isinstance(value, str) else value
        got = lookup(cfg, key)
        assert (list(got) if isinstance(got, (list, tuple)) else got) == (
            list(expected) if isinstance(expected, (list, tuple)) else expected), key
    if "TRAINER.COOP.CTX_INIT" in ORIGINAL["files"][name]:  # read by CoOp, not MVLPT: said, not silent
        assert "TRAINER.COOP.CTX_INIT \"a photo of a\" is the CoOp trainer's key" in caplog.text


def test_the_originals_train_py_keys_exist_with_its_defaults():
    cfg = extend_cfg(get_cfg_default())
    for key, value in ORIGINAL["train_py_extend_cfg"].items():
        assert lookup(cfg, key) == OUR_DEFAULTS.get(key, value), key


@pytest.mark.parametrize("key, value", [("DATASET.TRAIN_SET", "images"), ("DATASET.VAL_SET", "val"),
                                        ("DATASET.TEST_SET", "test"), ("DATASET.CENTER_CROP", True)])
def test_changed_keys_we_cannot_honour_are_one_sentence(key, value):
    from engine.config import check_cfg
    cfg = extend_cfg(get_cfg_default())
    cfg.merge_from_list([key, value])
    with pytest.raises(ConfigError, match=rf"^{key} is {value!r}, but nothing here reads it \(MVLPT's .*\); "
                                          rf"remove it or set it back to"):
        check_cfg(cfg)


def test_the_originals_25_flags_are_accepted(tmp_path):
    """Every flag of the original's train.py parses, with its spelling; the multitask ones set its keys."""
    import train
    argv = ["--root", "r", "--output-dir", "o", "--resume", "o", "--seed", "2", "--source-domains", "a",
            "--target-domains", "b", "--transforms", "normalize", "--config-file", "c.yaml",
            "--dataset-config-file", "d.yaml", "--dataset", "EuroSAT,DescribableTextures", "--shots", "4",
            "--trainer", "MVLPT", "--backbone", "ViT-B/16", "--head", "h", "--eval-only", "--model-dir", "m",
            "--load-epoch", "3", "--no-train", "--multi-task", "--multi-task-label_pertask",
            "--multi-task-evalkey", "EuroSAT", "--dataset-coop", "--cut-contextlen", "--act-ckpt", "2",
            "OPTIM.MAX_EPOCH", "1"]
    flags = {a for a in argv if a.startswith("--")}
    assert len(flags) == 24  # + the KEY VALUE opts: the original's 25
    args = train.parse_args(argv)
    assert args.multi_task_label_pertask and args.opts == ["OPTIM.MAX_EPOCH", "1"]
    cfg = extend_cfg(get_cfg_default())
    cfg.DATASET.MULTITASK_LABEL_PERTASK = False  # so the flag is seen setting it
    train.reset_multitask_cfg(cfg, args)
    assert cfg.DATASET.MULTITASK_LABEL_PERTASK is True and cfg.DATASET.MULTITASK and cfg.DATASET.COOP
    assert cfg.DATASET.MULTITASK_EVALKEY == "EuroSAT" and cfg.TRAINER.ACT_CKPT == 2 and cfg.TRAINER.CUT_CONTEXTLEN
    assert cfg.DATASET.DATASET == "EuroSAT,DescribableTextures" and cfg.DATASET.NUM_SHOTS == 4


def read_record_number(log, index=-2):
    """The original's scripts/read_record.py rule: "results" in lines[index], "test" two lines above,
    the first decimal number of lines[index] (index -2 after training, -1 for --eval-only)."""
    import re
    lines = log.read_text().splitlines(keepends=True)
    assert "results" in lines[index] and "test" in lines[index - 2], lines[index - 3:]
    return float(re.findall(r"([+-]?[0-9]*\.[0-9]*)", lines[index])[0])


def test_the_originals_log_lines_on_elevater_tasks(tmp_path):
    """Per task ``evaluate on the *T* !`` and ``results {'<its ELEVATER metric>': fraction}``, then
    ``Overall evaluation !`` and ``results {'average': ...}``; ours stay (Dassl's blocks, the average)."""
    import re
    root = str(tmp_path / "data")
    elevater_iris(root)
    elevater_coco(root)
    cfg = write_tiny_config(tmp_path / "cfg.yaml", tiny_clip(tmp_path, "vit"), dataset="", epochs=1, batch=4)
    out = tmp_path / "mt"
    run_train("--root", root, "--seed", 1, "--trainer", "MVLPT", "--config-file", cfg, "--output-dir", out,
              "--dataset", "cifar-10,resisc45_clip", "--multi-task", "--shots", 2,
              "TRAINER.MVLPT.COOP.N_CTX", 2, "TRAINER.MVLPT.PREC", "fp32")
    text = (out / "log.txt").read_text()
    final = text[text.rindex("Evaluate on the *test* set"):].splitlines()
    tasks = [(final.index(f"evaluate on the *{t}* !"), t) for t in ("cifar-10", "resisc45_clip")]
    results = json.loads((out / "results_test.json").read_text())
    values = []
    for (at, task), (nxt, _) in zip(tasks, tasks[1:] + [(len(final), None)]):
        assert final[at + 1] == f"=> result on {task}"  # ours follows
        line = next(x for x in final[at:nxt] if x.startswith("results "))
        value = float(re.fullmatch(r"results \{'accuracy': ([0-9.e-]+)\}", line).group(1))
        assert value == pytest.approx(results["tasks"][task] / 100)  # both ELEVATER tasks score accuracy
        values.append(value)
    assert final[-5:-1] == ["* accuracy: " + f"{results['average']:.1f}%", f"=> results saved to {out / 'results_test.json'}",
                            "Overall evaluation !", f"results {{'average': {sum(values) / 2!r}}}"]
    assert final[-1].startswith("Elapsed")
    assert read_record_number(out / "log.txt") == pytest.approx(sum(values) / 2)

    single = tmp_path / "single"
    run_train("--root", root, "--seed", 1, "--trainer", "MVLPT", "--config-file", cfg, "--output-dir", single,
              "--dataset", "cifar-10", "--shots", 2, "TRAINER.MVLPT.COOP.N_CTX", 2, "TRAINER.MVLPT.PREC", "fp32")
    accuracy = json.loads((single / "results_test.json").read_text())["accuracy"]
    assert read_record_number(single / "log.txt") == pytest.approx(accuracy / 100)
    evaluated = tmp_path / "eval"
    run_train("--root", root, "--seed", 1, "--trainer", "MVLPT", "--config-file", cfg, "--output-dir", evaluated,
              "--dataset", "cifar-10", "--shots", 2, "TRAINER.MVLPT.COOP.N_CTX", 2, "TRAINER.MVLPT.PREC", "fp32",
              "--eval-only", "--model-dir", single, "--load-epoch", 1)
    assert read_record_number(evaluated / "log.txt", index=-1) == pytest.approx(accuracy / 100)


def test_the_originals_log_lines_on_coop_tasks(assets, tmp_path):
    """CoOp data: Dassl's OrderedDict as its Python 3.8 prints it; CoOp's parse_test_res.py reads the
    last ``* accuracy:`` line, which in our log is the average (in the original's, the last task's)."""
    out = tmp_path / "out"
    run_train(*mvlpt_args(assets, out, "CoOp"), "OPTIM.MAX_EPOCH", 1)
    text = (out / "log.txt").read_text()
    final = text[text.rindex("Evaluate on the *test* set"):].splitlines()
    results = json.loads((out / "results_test.json").read_text())
    at = final.index("evaluate on the *DescribableTextures* !")
    line = next(x for x in final[at:] if x.startswith("results "))
    assert re.fullmatch(r"results OrderedDict\(\[\('accuracy', [0-9.]+\), \('error_rate', [0-9.e-]+\), "
                        r"\('macro_f1', [0-9.e-]+\)\]\)", line)
    assert float(line.split("'accuracy', ")[1].split(")")[0]) == pytest.approx(results["tasks"]["DescribableTextures"])
    assert accuracies(out / "log.txt")[-1] == pytest.approx(results["average"], abs=0.05)
    assert read_record_number(out / "log.txt") == pytest.approx(results["average"])
