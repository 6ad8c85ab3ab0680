"""CoOp and CoCoOp (trainers/coop.py, trainers/cocoop.py) on a tiny CLIP, CPU.

Invariants: an initial context of "a photo of a" gives zero-shot CLIP's logits for that
template (with the class token at the end, middle or front: the prompt's words in that order);
cached image features train exactly like the end-to-end loop when views = epochs; the state
dict keys are the original's and a wrong key is named; both train and evaluate through
train.py on a replica; both resume after SIGKILL to the uninterrupted run's result; bad config
values are one sentence.
"""
import os
import signal
import subprocess
import sys

import pytest
import torch

import clip
from dataset_replicas import REPLICA_NAMES, REPLICA_OPTS, build_replica
from engine.errors import CheckpointError, ConfigError
from engine.utils.checkpoint import load_checkpoint
from helpers import ROOT, accuracies, make_image_folder, run_train, tiny_clip, write_tiny_config
from test_methods_train import CHILD, final_state, last_epoch  # the child that SIGKILLs itself at the Nth call
from trainers import cocoop, coop

CLASSNAMES = ["cat", "dog", "sea_lion", "bird"]


@pytest.fixture
def clip_model(tmp_path):
    model, _ = clip.load(tiny_clip(tmp_path), device="cpu")
    return model.float().eval()


def zero_shot_logits(model, images, texts):
    with torch.no_grad():
        image = model.encode_image(images)
        text = model.encode_text(clip.tokenize(texts))
    image = image / image.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    return model.logit_scale.exp() * image @ text.t()


@pytest.mark.parametrize("position, template", [
    ("end", "a photo of a {}."),
    ("middle", "a photo {} of a."),  # half of the 4 context words before the name, half after
    ("front", "{} a photo of a."),
])
def test_initial_context_gives_zero_shot_logits(clip_model, position, template):
    torch.manual_seed(0)
    images = torch.randn(5, 3, 32, 32)
    learner = coop.PromptLearner(CLASSNAMES, clip_model, n_ctx=16, ctx_init="a photo of a",
                                 class_token_position=position)
    assert learner.n_ctx == 4  # CTX_INIT's word count replaces N_CTX
    model = coop.CustomCLIP(clip_model, learner).eval()
    with torch.no_grad():
        logits = model(images)
        from_features = model(clip_model.encode_image(images))  # the cached-feature path
    expected = zero_shot_logits(clip_model, images, [template.format(c.replace("_", " ")) for c in CLASSNAMES])
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(from_features, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n_ctx", [1, 4, 16])
def test_shared_prefix_text_path_equals_the_full_prompts(clip_model, n_ctx):
    """Values and context gradients of the shared-prefix path = the full prompts through the
    transformer (what the original computes)."""
    torch.manual_seed(2)
    learner = coop.PromptLearner(CLASSNAMES, clip_model, n_ctx=n_ctx)
    fast = coop.CustomCLIP(clip_model, learner)
    slow = coop.CustomCLIP(clip_model, learner, shared_prefix=False)
    assert fast.shared_prefix and not slow.shared_prefix
    feats = torch.randn(6, clip_model.visual.output_dim)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    grads = []
    for model in (fast, slow):
        learner.zero_grad()
        logits = model(feats)
        torch.nn.functional.cross_entropy(logits, labels).backward()
        grads.append((logits.detach(), learner.ctx.grad.clone()))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-3, atol=1e-7)
    assert grads[1][1].abs().max() > 0


def test_cocoop_with_a_zero_meta_net_gives_zero_shot_logits(clip_model):
    torch.manual_seed(0)
    images = torch.randn(3, 3, 32, 32)
    learner = cocoop.PromptLearner(CLASSNAMES, clip_model, ctx_init="a photo of a")
    with torch.no_grad():
        learner.meta_net.linear2.weight.zero_()
        learner.meta_net.linear2.bias.zero_()
    model = cocoop.CustomCLIP(clip_model, learner).eval()
    with torch.no_grad():
        logits = model(images)
    expected = zero_shot_logits(clip_model, images, [f"a photo of a {c.replace('_', ' ')}." for c in CLASSNAMES])
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)


def test_cocoop_batched_text_forward_equals_a_loop_over_images(clip_model):
    """One text-encoder call over (image, class) pairs = the original's loop over images."""
    torch.manual_seed(1)
    learner = cocoop.PromptLearner(CLASSNAMES, clip_model, n_ctx=4)
    model = cocoop.CustomCLIP(clip_model, learner).eval()
    full = cocoop.CustomCLIP(clip_model, learner, shared_prefix=False).eval()
    assert model.shared_prefix and not full.shared_prefix
    feats = torch.randn(3, clip_model.visual.output_dim)
    with torch.no_grad():
        logits = model(feats)
        torch.testing.assert_close(full(feats), logits, rtol=1e-4, atol=1e-5)
        normed = feats / feats.norm(dim=-1, keepdim=True)
        prompts = learner(normed)
        rows = []
        for prompt, feat in zip(prompts, normed):
            text = model.text_encoder(prompt, learner.tokenized_prompts)
            text = text / text.norm(dim=-1, keepdim=True)
            rows.append(clip_model.logit_scale.exp() * feat @ text.t())
    torch.testing.assert_close(logits, torch.stack(rows), rtol=1e-5, atol=1e-5)
    assert (logits[0] - logits[1]).abs().max() > 1e-4  # the context does depend on the image


def test_state_dict_keys_and_shapes_are_the_originals(clip_model):
    width = clip_model.ln_final.weight.shape[0]
    unified = coop.PromptLearner(CLASSNAMES, clip_model, n_ctx=8).state_dict()
    assert set(unified) == {"ctx", "token_prefix", "token_suffix"}
    assert unified["ctx"].shape == (8, width) and unified["token_prefix"].shape == (4, 1, width)
    assert unified["token_suffix"].shape == (4, 77 - 1 - 8, width)
    csc = coop.PromptLearner(CLASSNAMES, clip_model, n_ctx=8, csc=True).state_dict()
    assert csc["ctx"].shape == (4, 8, width)
    co = cocoop.PromptLearner(CLASSNAMES, clip_model, n_ctx=4).state_dict()
    assert set(co) == {"ctx", "token_prefix", "token_suffix", "meta_net.linear1.weight", "meta_net.linear1.bias",
                       "meta_net.linear2.weight", "meta_net.linear2.bias"}
    dim = clip_model.visual.output_dim
    assert co["meta_net.linear1.weight"].shape == (dim // 16, dim) and co["meta_net.linear2.weight"].shape == (width, dim // 16)


def test_loading_ignores_prefix_suffix_but_names_a_wrong_key(clip_model):
    learner = coop.PromptLearner(CLASSNAMES, clip_model, n_ctx=4)
    other = coop.PromptLearner(["x", "y", "z", "w"], clip_model, n_ctx=4)  # other class names
    saved = other.state_dict()
    adapted = coop.adapt_prompt_state_dict(learner, saved)
    learner.load_state_dict(adapted)
    torch.testing.assert_close(learner.ctx, other.ctx)
    # the current class names' token vectors stay
    assert not torch.equal(learner.token_suffix, other.token_suffix)
    assert torch.equal(learner.token_suffix, coop.PromptLearner(CLASSNAMES, clip_model, n_ctx=4).token_suffix)
    misnamed = {("context" if k == "ctx" else k): v for k, v in saved.items()}
    with pytest.raises(CheckpointError, match="missing ctx; unexpected context"):
        coop.adapt_prompt_state_dict(learner, misnamed)


@pytest.fixture
def setup(tmp_path):
    data = make_image_folder(tmp_path / "data")
    cfg = write_tiny_config(tmp_path / "cfg.yaml", tiny_clip(tmp_path), epochs=3, batch=4, lr=0.05)
    return data, cfg, tmp_path


# each trainer gets only its own group's keys: another trainer's key is refused (it would be ignored)
N_CTX = {"CoOp": ("TRAINER.COOP.N_CTX", 4), "CoCoOp": ("TRAINER.COCOOP.N_CTX", 2)}


def tiny_args(setup, out, trainer, *opts, extra=()):
    data, cfg, _ = setup
    return ["--root", data, "--seed", 1, "--trainer", trainer, "--config-file", cfg, "--output-dir", out,
            *extra, "DATASET.NUM_SHOTS", 4, *N_CTX[trainer], "OPTIM.NAME", "sgd", *opts]


def train(setup, name, trainer, *opts, extra=()):
    out = setup[2] / name
    return run_train(*tiny_args(setup, out, trainer, *opts, extra=extra)), out


@pytest.mark.parametrize("trainer", ["CoOp", "CoCoOp"])
def test_cached_features_train_like_the_end_to_end_loop(setup, trainer):
    e2e, _ = train(setup, f"e2e_{trainer}", trainer, "FEATURE_CACHE.ENABLED", False)
    assert e2e.feature_store is None
    cached, out = train(setup, f"cached_{trainer}", trainer, "FEATURE_CACHE.TRAIN_VIEWS", 3)
    assert cached.feature_store is not None
    # same seed -> same random context at the start; same views and order -> same steps
    torch.testing.assert_close(cached.model.prompt_learner.ctx, e2e.model.prompt_learner.ctx, rtol=1e-4, atol=1e-6)
    for run in (e2e, cached):  # one scheduler step per epoch (at the last batch), never two
        assert run.sched.last_epoch == 3
    fresh, _ = train(setup, f"fresh_{trainer}", trainer, "OPTIM.MAX_EPOCH", 1, "OPTIM.LR", 1e-9,
                     "OPTIM.WARMUP_EPOCH", 0)
    assert (cached.model.prompt_learner.ctx - fresh.model.prompt_learner.ctx).abs().max() > 1e-4  # it trained
    assert len(accuracies(out / "log.txt")) == 1


@pytest.mark.parametrize("trainer", ["CoOp", "CoCoOp"])
def test_sigkill_then_the_same_command_ends_as_an_uninterrupted_run(setup, trainer):
    """Killed in epoch 3 (3 epochs of 3 batches), the same command resumes from epoch 2's checkpoint
    and ends with the uninterrupted run's prompt learner and accuracy."""
    reference, out = setup[2] / "reference", setup[2] / "killed"
    resume_every_epoch = ("TRAIN.RESUME_SAVE_SECONDS", 0)
    run_train(*tiny_args(setup, reference, trainer, *resume_every_epoch))
    target = f"trainers.{trainer.lower()}.{trainer}:forward_backward"
    proc = subprocess.run([sys.executable, "-c", CHILD.format(root=ROOT), target, "8",
                           *map(str, tiny_args(setup, out, trainer, *resume_every_epoch))],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert "epoch [3/3] batch [1/3]" in (out / "log.txt").read_text()  # it died inside epoch 3
    run_train(*tiny_args(setup, out, trainer, *resume_every_epoch))
    assert last_epoch(out, "prompt_learner") == last_epoch(reference, "prompt_learner") == 3
    resumed = (out / "log.txt").read_text().rsplit("new run in this folder", 1)[1]  # appended after a separator
    assert "Previous epoch: 2" in resumed and "epoch [2/3]" not in resumed and "epoch [3/3]" in resumed
    assert accuracies(out / "log.txt")[-1] == accuracies(reference / "log.txt")[-1]
    state = [final_state(d, "prompt_learner") for d in (reference, out)]
    assert state[0].keys() == state[1].keys()
    assert all(torch.equal(state[0][k], state[1][k]) for k in state[0])


@pytest.mark.parametrize("trainer, keys", [
    ("CoOp", {"ctx", "token_prefix", "token_suffix"}),
    ("CoCoOp", {"ctx", "token_prefix", "token_suffix", "meta_net.linear1.weight", "meta_net.linear1.bias",
                "meta_net.linear2.weight", "meta_net.linear2.bias"}),
])
def test_trains_and_evaluates_through_train_py_on_a_replica(tmp_path, trainer, keys):
    root = build_replica("EuroSAT", tmp_path / "data")
    cfg = write_tiny_config(tmp_path / "cfg.yaml", tiny_clip(tmp_path), dataset="EuroSAT", epochs=2)
    out = tmp_path / "out"
    common = ("--root", root, "--seed", 1, "--trainer", trainer, "--config-file", cfg)
    run_train(*common, "--output-dir", out, "DATASET.NUM_SHOTS", 2, N_CTX[trainer][0], 4)
    trained = accuracies(out / "log.txt")
    assert len(trained) == 1
    checkpoint = load_checkpoint(os.path.join(out, "prompt_learner", "model.pth.tar-2"))
    assert set(checkpoint["state_dict"]) == keys and checkpoint["epoch"] == 2
    run_train(*common, "--output-dir", tmp_path / "eval", "--model-dir", out, "--load-epoch", 2, "--eval-only",
              N_CTX[trainer][0], 4)
    assert accuracies(tmp_path / "eval" / "log.txt") == trained
    # MODEL.INIT_WEIGHTS starts the prompt learner from a saved one
    init = run_train(*common, "--output-dir", tmp_path / "init", "--no-train", N_CTX[trainer][0], 4,
                     "MODEL.INIT_WEIGHTS", os.path.join(out, "prompt_learner", "model.pth.tar-2"))
    torch.testing.assert_close(init.model.prompt_learner.ctx, checkpoint["state_dict"]["ctx"])


@pytest.mark.parametrize("trainer", ["CoOp", "CoCoOp"])
@pytest.mark.parametrize("name", REPLICA_NAMES)
def test_runs_on_each_replica(tmp_path, name, trainer):
    root = build_replica(name, tmp_path / "data")
    cfg = write_tiny_config(tmp_path / "cfg.yaml", tiny_clip(tmp_path), dataset=name, epochs=1)
    out = tmp_path / "out"
    model = run_train("--root", root, "--seed", 1, "--trainer", trainer, "--config-file", cfg, "--output-dir", out,
                      "DATASET.NUM_SHOTS", 1, N_CTX[trainer][0], 2,
                      *[x for kv in REPLICA_OPTS.get(name, {}).items() for x in kv])
    assert len(accuracies(out / "log.txt")) == 1
    assert model.model.prompt_learner.token_prefix.shape[0] == model.num_classes


def test_cocoop_base_to_new(tmp_path):
    root = build_replica("EuroSAT", tmp_path / "data")
    cfg = write_tiny_config(tmp_path / "cfg.yaml", tiny_clip(tmp_path), dataset="EuroSAT", epochs=1)
    common = ("--root", root, "--seed", 1, "--trainer", "CoCoOp", "--config-file", cfg)
    base = run_train(*common, "--output-dir", tmp_path / "base", "DATASET.NUM_SHOTS", 2,
                     "DATASET.SUBSAMPLE_CLASSES", "base")
    new = run_train(*common, "--output-dir", tmp_path / "new", "--model-dir", tmp_path / "base", "--load-epoch", 1,
                    "--eval-only", "DATASET.NUM_SHOTS", 2, "DATASET.SUBSAMPLE_CLASSES", "new")
    assert base.num_classes + new.num_classes == 10  # EuroSAT's classes split in halves
    assert base.dm.dataset.classnames != new.dm.dataset.classnames
    torch.testing.assert_close(new.model.prompt_learner.ctx, base.model.prompt_learner.ctx)
    assert len(accuracies(tmp_path / "new" / "log.txt")) == 1


@pytest.mark.parametrize("opts, message", [
    (("TRAINER.COOP.CLASS_TOKEN_POSITION", "ends"),
     "TRAINER.COOP.CLASS_TOKEN_POSITION must be one of end, middle, front, got 'ends'."),
    (("TRAINER.COOP.N_CTX", 0), "TRAINER.COOP.N_CTX must be a whole number of at least 1"),
    (("TRAINER.COOP.PREC", "fp8"), "TRAINER.COOP.PREC must be one of fp16, fp32, amp, got 'fp8'."),
    (("INPUT.SIZE", "(64, 64)"), "INPUT.SIZE is (64, 64) but the CLIP backbone"),
])
def test_bad_config_values_are_one_sentence(setup, opts, message):
    with pytest.raises(ConfigError) as info:
        train(setup, "bad", "CoOp", *opts)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_cocoop_bad_n_ctx(setup):
    with pytest.raises(ConfigError, match="TRAINER.COCOOP.N_CTX must be a whole number of at least 1"):
        train(setup, "bad", "CoCoOp", "TRAINER.COCOOP.N_CTX", -1)
