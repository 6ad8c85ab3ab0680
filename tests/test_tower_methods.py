"""The methods that change the image tower (trainers/maple.py, trainers/promptsrc.py, trainers/clip_lora.py), CPU.

Invariants that could fail: MaPLe's shallow text side equals zero-shot CLIP's prompt, its deep prompts
replace the slots of exactly the blocks they name (hand-unrolled forwards) and prompts beyond the
layers are unused; training through train.py on a replica ends to end (no feature cache) with the
original's checkpoint keys; an original checkpoint (with its frozen CLIP copy) loads; a run resumed
from its epoch-1 checkpoint ends where the uninterrupted run ends; bad input is one sentence.
Parity against the original repositories is scripts/parity/tower_methods.sh (needs them; not run here).
"""
import glob
import os
import re
import shutil

import pytest
import torch

import clip
from clip.model import CLIP
from dataset_replicas import build_replica
from engine.config import get_cfg_default
from engine.errors import CheckpointError, ConfigError
from engine.utils.checkpoint import load_checkpoint
from helpers import ROOT, accuracies, run_train, tiny_clip
from trainers import clip_lora, extend_cfg, maple, promptsrc

CLASSNAMES = ["cat", "dog", "sea_lion", "bird"]


def deep_clip(seed=0):
    """3 layers per tower, vision width 96 != text width 64 (the widths come from the model)."""
    torch.manual_seed(seed)
    model = CLIP(32, 32, 3, 96, 16, 77, 49408, 64, 1, 3).float().eval()
    with torch.no_grad():  # LayerNorms and biases off their constant init, so a slip shows
        for name, p in model.named_parameters():
            if p.dim() == 1 and "class_embedding" not in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def deep_clip_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "deep_vit.pt"
    torch.save(deep_clip().state_dict(), path)
    return str(path)


def zero_shot_text(model, texts):
    with torch.no_grad():
        text = model.encode_text(clip.tokenize(texts))
    return text / text.norm(dim=-1, keepdim=True)


# ---------------------------------------------------------------------------------------- MaPLe


def maple_model(depth, n_ctx=2, ctx_init="a photo of a", model=None):
    model = model or deep_clip()
    learner = maple.MultiModalPromptLearner(CLASSNAMES, model, n_ctx, ctx_init, depth)
    return model, maple.CustomCLIP(model, learner).eval()


def test_maple_shallow_text_side_is_the_zero_shot_prompt():
    """Depth 1, CTX_INIT's first 2 tokens as context: the prompt is "a photo of a <class>." exactly."""
    model, custom = maple_model(depth=1)
    assert len(custom.prompt_learner.compound_prompts_text) == 0
    with torch.no_grad():
        text = custom.text_features(custom.prompt_learner())
    expected = zero_shot_text(model, [f"a photo of a {c.replace('_', ' ')}." for c in CLASSNAMES])
    torch.testing.assert_close(text, expected, rtol=1e-5, atol=1e-5)
    assert custom.prompt_learner.proj.weight.shape == (96, 64)  # text width -> vision width


def test_maple_random_context_when_n_ctx_is_over_four():
    """As the original: CTX_INIT is used only for N_CTX <= 4; else random context and "X X .. <class>."."""
    _, custom = maple_model(depth=1, n_ctx=5)
    learner = custom.prompt_learner
    assert learner.ctx.shape == (5, 64)
    tokens = clip.tokenize("X X X X X cat.")[0]
    assert torch.equal(learner.tokenized_prompts[0], tokens)


def _vit_by_hand(visual, images, shallow, deep):
    x = visual.conv1(images).flatten(2).permute(0, 2, 1)
    x = torch.cat([visual.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + visual.positional_embedding
    n = shallow.shape[0]
    x = visual.ln_pre(torch.cat([x, shallow.expand(x.shape[0], -1, -1)], dim=1))  # appended, then ln_pre
    for i, block in enumerate(visual.transformer.resblocks):
        if 1 <= i <= len(deep):  # block i's prompt slots (the last n tokens) take deep[i - 1]
            x = torch.cat([x[:, :-n], deep[i - 1].expand(x.shape[0], -1, -1)], dim=1)
        x = block(x.permute(1, 0, 2)).permute(1, 0, 2)
    return visual.ln_post(x[:, 0]) @ visual.proj


def _text_by_hand(model, prompts, tokenized, deep):
    x = prompts + model.positional_embedding  # all 77 positions (the forward cuts at the longest EOT)
    n = deep[0].shape[0] if deep else 0
    for i, block in enumerate(model.transformer.resblocks):
        if 1 <= i <= len(deep):  # slots 1..n (after SOS) take deep[i - 1]
            x = torch.cat([x[:, :1], deep[i - 1].expand(x.shape[0], -1, -1), x[:, 1 + n:]], dim=1)
        x = block(x.permute(1, 0, 2)).permute(1, 0, 2)
    x = model.ln_final(x)
    return x[torch.arange(x.shape[0]), tokenized.argmax(-1)] @ model.text_projection


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_maple_deep_prompts_replace_the_named_blocks_slots(depth):
    model, custom = maple_model(depth)
    learner = custom.prompt_learner
    with torch.no_grad():
        for p in learner.compound_prompt_projections.parameters():  # apart from their shared init
            p.add_(0.05 * torch.randn_like(p))
        torch.manual_seed(3)
        images = torch.randn(3, 3, 32, 32)
        prompts = learner()
        text_prompts, visual, deep_text, deep_visual = prompts
        assert len(deep_text) == len(deep_visual) == depth - 1 and visual.shape == (2, 96)
        image = custom.image_features(images, prompts)
        text = custom.text_features(prompts)
        want_image = _vit_by_hand(model.visual, images, visual, deep_visual)
        want_text = _text_by_hand(model, text_prompts, learner.tokenized_prompts, deep_text)
    torch.testing.assert_close(image, want_image / want_image.norm(dim=-1, keepdim=True), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(text, want_text / want_text.norm(dim=-1, keepdim=True), rtol=1e-5, atol=1e-5)


def test_maple_prompts_beyond_the_layers_change_nothing_and_the_others_do():
    _, custom = maple_model(depth=5)  # 3 layers: deep prompts 0 and 1 are used, 2 and 3 are not
    learner = custom.prompt_learner
    torch.manual_seed(4)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        base = custom(images)
        for j, used in ((0, True), (1, True), (2, False), (3, False)):
            saved = learner.compound_prompts_text[j].clone()
            learner.compound_prompts_text[j].add_(torch.randn_like(saved))
            changed = custom(images)
            learner.compound_prompts_text[j].copy_(saved)
            assert ((changed - base).abs().max() > 1e-4) == used, f"deep prompt {j}"


def test_maple_deep_projections_start_as_clones():
    _, custom = maple_model(depth=4)
    first, *rest = custom.prompt_learner.compound_prompt_projections
    for layer in rest:
        assert torch.equal(layer.weight, first.weight) and torch.equal(layer.bias, first.bias)


def test_maple_config_group_and_protocol():
    cfg = extend_cfg(get_cfg_default())
    m = cfg.TRAINER.MAPLE
    assert (m.N_CTX, m.CTX_INIT, m.PREC, m.PROMPT_DEPTH) == (2, "a photo of a", "fp16", 9)
    p = maple.MaPLe.protocol
    assert (p.label, p.end_to_end, p.evaluations) == ("MaPLe", True, ("base2new", "dg"))
    for stem in (p.config("eurosat", 16, "vit_b16"), p.extra["dg_config"]):
        assert os.path.isfile(os.path.join(ROOT, "configs", "trainers", "MaPLe", f"{stem}.yaml"))
    with pytest.raises(ValueError, match="ViT-B/16 settings only"):
        p.config("eurosat", 16, "rn50")


@pytest.fixture(scope="module")
def replica(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    build_replica("EuroSAT", str(root))
    return str(root)


def maple_args(replica, clip_file, out, *opts, flags=()):
    return ["--root", replica, "--seed", 1, "--trainer", "MaPLe", "--dataset-config-file",
            os.path.join(ROOT, "configs/datasets/eurosat.yaml"), "--config-file",
            os.path.join(ROOT, "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml"), "--output-dir", out,
            "--backbone", clip_file, *flags, "DATASET.NUM_SHOTS", 2, "INPUT.SIZE", "(32, 32)",
            "DATALOADER.NUM_WORKERS", 0, "OPTIM.MAX_EPOCH", 1, "OPTIM.LR", 0.05, "TRAINER.MAPLE.PROMPT_DEPTH", 3,
            *opts]


MAPLE_KEYS = {"prompt_learner.ctx", "prompt_learner.proj.weight", "prompt_learner.proj.bias",
              "prompt_learner.token_prefix", "prompt_learner.token_suffix",
              *(f"prompt_learner.compound_prompts_text.{j}" for j in (0, 1)),
              *(f"prompt_learner.compound_prompt_projections.{j}.{w}" for j in (0, 1) for w in ("weight", "bias"))}


def test_maple_trains_end_to_end_through_train_py(replica, deep_clip_file, tmp_path):
    out = tmp_path / "run"
    trainer = run_train(*maple_args(replica, deep_clip_file, out))
    assert trainer.feature_store is None and trainer.prec == "fp32"
    text = (out / "log.txt").read_text()
    assert re.search(r"^WARNING: .*PREC fp16 needs a GPU; running in fp32 on the CPU$", text, re.M)  # published PREC
    assert "Feature cache off: MaPLe's prompts enter the image encoder's blocks" in text
    state = load_checkpoint(os.path.join(out, "MultiModalPromptLearner", "model.pth.tar-1"))["state_dict"]
    assert set(state) == MAPLE_KEYS
    start = maple_model(3, model=clip.load(deep_clip_file, device="cpu")[0].float())[1].prompt_learner.ctx
    assert (state["prompt_learner.ctx"] - start).abs().max() > 1e-5  # it trained
    assert len(accuracies(out / "log.txt")) == 1


def test_maple_loads_an_original_checkpoint_with_its_frozen_clip_copy(replica, deep_clip_file, tmp_path):
    out = tmp_path / "run"
    trained = run_train(*maple_args(replica, deep_clip_file, out, "TRAINER.MAPLE.PREC", "fp32"))
    folder = out / "MultiModalPromptLearner"
    checkpoint = load_checkpoint(os.path.join(folder, "model.pth.tar-1"))
    # the original saves the whole CustomCLIP: frozen image/text encoders and logit_scale too
    full = dict(checkpoint["state_dict"])
    full.update({f"image_encoder.{k}": v for k, v in trained.model.image_encoder.state_dict().items()})
    full["text_encoder.ln_final.weight"] = trained.model.text_encoder.ln_final.weight
    full["logit_scale"] = trained.model.logit_scale.detach()
    orig = tmp_path / "orig" / "MultiModalPromptLearner"
    orig.mkdir(parents=True)
    torch.save(dict(checkpoint, state_dict=full), orig / "model.pth.tar-1")
    evaluated = run_train(*maple_args(replica, deep_clip_file, tmp_path / "eval", "TRAINER.MAPLE.PREC", "fp32",
                                      flags=("--eval-only", "--model-dir", tmp_path / "orig", "--load-epoch", 1)))
    torch.testing.assert_close(evaluated.model.prompt_learner.ctx, trained.model.prompt_learner.ctx)
    assert accuracies(tmp_path / "eval" / "log.txt") == accuracies(out / "log.txt")[-1:]

    full["prompt_learner.extra_prompt"] = torch.zeros(2)  # a key neither side has
    torch.save(dict(checkpoint, state_dict=full), orig / "model.pth.tar-1")
    with pytest.raises(CheckpointError, match="unexpected prompt_learner.extra_prompt") as info:
        run_train(*maple_args(replica, deep_clip_file, tmp_path / "eval2", "TRAINER.MAPLE.PREC", "fp32",
                              flags=("--eval-only", "--model-dir", tmp_path / "orig", "--load-epoch", 1)))
    assert "\n" not in str(info.value)


def test_maple_resumes_from_its_epoch_1_checkpoint_to_the_same_end(replica, deep_clip_file, tmp_path):
    opts = ("OPTIM.MAX_EPOCH", 2, "TRAIN.CHECKPOINT_FREQ", 1, "TRAINER.MAPLE.PREC", "fp32",
            "DATALOADER.TRAIN_X.BATCH_SIZE", 20)  # one full batch: no sampling order to replay
    full, cut = tmp_path / "full", tmp_path / "cut"
    run_train(*maple_args(replica, deep_clip_file, full, *opts))
    shutil.copytree(full, cut)
    folder = cut / "MultiModalPromptLearner"
    os.remove(folder / "model.pth.tar-2")
    (folder / "checkpoint").write_text("model.pth.tar-1\n")
    resumed = run_train(*maple_args(replica, deep_clip_file, cut, *opts))
    assert resumed.start_epoch == 1
    done = load_checkpoint(os.path.join(folder, "model.pth.tar-2"))["state_dict"]
    reference = load_checkpoint(os.path.join(full, "MultiModalPromptLearner", "model.pth.tar-2"))["state_dict"]
    for key in MAPLE_KEYS:
        torch.testing.assert_close(done[key], reference[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("opts, message", [
    (("TRAINER.MAPLE.PROMPT_DEPTH", 0), "TRAINER.MAPLE.PROMPT_DEPTH must be a whole number of at least 1"),
    (("TRAINER.MAPLE.PREC", "fp8"), "TRAINER.MAPLE.PREC must be one of fp16, fp32, amp, got 'fp8'."),
])
def test_maple_bad_input_is_one_sentence(replica, deep_clip_file, tmp_path, opts, message):
    with pytest.raises(ConfigError) as info:
        run_train(*maple_args(replica, deep_clip_file, tmp_path / "bad", *opts))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_maple_on_a_resnet_is_one_sentence(replica, tmp_path):
    with pytest.raises(ConfigError, match="MaPLe prompts the layers of a ViT"):
        run_train(*maple_args(replica, tiny_clip(tmp_path, "resnet"), tmp_path / "bad"))


# ------------------------------------------------------------------------------------ CLIP-LoRA


def lora_cfg(**keys):
    cfg = extend_cfg(get_cfg_default())
    for key, value in keys.items():
        cfg.TRAINER.CLIP_LORA[key] = value
    return cfg.TRAINER.CLIP_LORA


def test_lora_with_b_zero_is_zero_shot_exactly():
    model = deep_clip()
    reference = deep_clip()
    layers = clip_lora.apply_lora(model, lora_cfg(PARAMS=["q", "k", "v", "o"]))
    assert len(layers) == 6 and all(set(layer) == {"q_proj", "k_proj", "v_proj", "proj"} for layer in layers.values())
    custom = clip_lora.CustomCLIP(model, CLASSNAMES, "both")
    layers.train()  # dropout on: B = 0 still adds nothing
    torch.manual_seed(5)
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        logits = custom(images)
        image = reference.encode_image(images)
    image = image / image.norm(dim=-1, keepdim=True)
    text = zero_shot_text(reference, [f"a photo of a {c.replace('_', ' ')}." for c in CLASSNAMES])
    torch.testing.assert_close(logits, 100 * image @ text.t(), rtol=1e-5, atol=1e-4)


def test_lora_attention_equals_the_merged_weights():
    """W x + (alpha / sqrt(r)) B A x for q, k, v and the output projection: the attention with merged weights."""
    torch.manual_seed(6)
    base = torch.nn.MultiheadAttention(64, 2)
    merged = torch.nn.MultiheadAttention(64, 2)
    merged.load_state_dict(base.state_dict())
    c = lora_cfg(R=4, ALPHA=3, DROPOUT_RATE=0.0, PARAMS=["q", "v", "o"])
    loras = {p: clip_lora.LoRA(64, 64, c.R, c.ALPHA, 0.0) for p in c.PARAMS}
    with torch.no_grad():
        delta = {}
        for p, m in loras.items():
            m.w_lora_B.normal_(std=0.1)
            delta[p] = 3 / 2 * m.w_lora_B @ m.w_lora_A  # scaling alpha / sqrt(r) = 3 / 2
        merged.in_proj_weight[:64] += delta["q"]
        merged.in_proj_weight[128:] += delta["v"]
        merged.out_proj.weight += delta["o"]
        x = torch.randn(7, 5, 64)
        mask = torch.full((7, 7), float("-inf")).triu_(1)
        got = clip_lora.LoRAAttention(base, loras)(x, x, x, need_weights=False, attn_mask=mask)[0]
        want = merged(x, x, x, need_weights=False, attn_mask=mask)[0]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_lora_positions_are_the_originals_index_lists():
    original_12 = {"bottom": [0, 1, 2, 3], "mid": [4, 5, 6, 7], "up": [8, 9, 10, 11], "half-up": [6, 7, 8, 9, 10, 11],
                   "half-bottom": [0, 1, 2, 3, 4, 5], "all": list(range(12)), "top3": [9, 10, 11]}
    for position, indices in original_12.items():
        assert clip_lora.block_indices(position, 12) == indices
    assert clip_lora.block_indices("half-up", 24) == list(range(12, 24))  # ViT-L/14's vision lists
    assert clip_lora.block_indices("half-bottom", 24) == list(range(12))


def lora_args(replica, clip_file, out, *opts, flags=()):
    return ["--root", replica, "--seed", 1, "--trainer", "CLIP_LoRA", "--dataset-config-file",
            os.path.join(ROOT, "configs/datasets/eurosat.yaml"), "--config-file",
            os.path.join(ROOT, "configs/trainers/CLIP_LoRA/vit_b16.yaml"), "--output-dir", out,
            "--backbone", clip_file, *flags, "DATASET.NUM_SHOTS", 2, "INPUT.SIZE", "(32, 32)",
            "DATALOADER.NUM_WORKERS", 0, "DATALOADER.TRAIN_X.BATCH_SIZE", 6, "TRAINER.CLIP_LORA.N_ITERS", 5,
            "OPTIM.LR", 0.01, *opts]


def test_lora_trains_n_iters_times_shots_iterations_end_to_end(replica, deep_clip_file, tmp_path):
    out = tmp_path / "run"
    trainer = run_train(*lora_args(replica, deep_clip_file, out))
    text = (out / "log.txt").read_text()
    # 20 images, batches of 6 (the last partial one dropped): 3 per epoch; 5 x 2 shots = 10 = 3 + 3 + 3 + 1
    assert "10 iterations (N_ITERS 5 x 2 shots) = 4 epochs of 3 batches" in text
    assert "epoch [4/4] batch [1/1]" in text and "epoch [4/4] batch [2/" not in text
    assert trainer.sched.last_epoch == 10 and trainer.feature_store is None
    assert "Feature cache off: LoRA changes the text and image encoders" in text
    assert re.search(r"^WARNING: .*PREC amp \(fp16 autocast\) needs a GPU; running in fp32 on the CPU$", text, re.M)
    state = load_checkpoint(os.path.join(out, "lora", "model.pth.tar-4"))["state_dict"]
    assert set(state) == {f"layer_{i}.{p}.w_lora_{m}" for i in range(6) for p in ("q_proj", "k_proj", "v_proj")
                          for m in "AB"}
    assert max(v.abs().max() for k, v in state.items() if k.endswith("B")) > 0  # B left zero: it trained
    exported = torch.load(out / "lora_weights.pt", weights_only=False)  # the original's save_lora format
    assert exported["metadata"] == {"r": 2, "alpha": 1, "encoder": "both", "params": ["q", "k", "v"], "position": "all"}
    torch.testing.assert_close(exported["weights"]["layer_3"]["v_proj"]["w_lora_B"], state["layer_3.v_proj.w_lora_B"])

    # the original's file evaluates here (a folder holding only lora_weights.pt), its metadata checked
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(out / "lora_weights.pt", alone)
    for name, flags in (("eval_orig", ("--model-dir", alone)), ("eval_ours", ("--model-dir", out, "--load-epoch", 4))):
        evaluated = run_train(*lora_args(replica, deep_clip_file, tmp_path / name, flags=("--eval-only", *flags)))
        assert accuracies(tmp_path / name / "log.txt") == accuracies(out / "log.txt")[-1:]
        torch.testing.assert_close(evaluated.lora.state_dict()["layer_0.q_proj.w_lora_A"], state["layer_0.q_proj.w_lora_A"])
    with pytest.raises(CheckpointError, match=r"trained with r 2, this run has TRAINER.CLIP_LORA.R 4") as info:
        run_train(*lora_args(replica, deep_clip_file, tmp_path / "bad", "TRAINER.CLIP_LORA.R", 4,
                             flags=("--eval-only", "--model-dir", alone)))
    assert "\n" not in str(info.value)


def test_lora_resumes_from_its_epoch_1_checkpoint_to_the_same_end(replica, deep_clip_file, tmp_path):
    opts = ("TRAIN.CHECKPOINT_FREQ", 1, "DATALOADER.TRAIN_X.BATCH_SIZE", 20, "TRAINER.CLIP_LORA.N_ITERS", 1,
            "TRAINER.CLIP_LORA.DROPOUT_RATE", 0.0)  # one full batch, 2 iterations = 2 epochs
    full, cut = tmp_path / "full", tmp_path / "cut"
    run_train(*lora_args(replica, deep_clip_file, full, *opts))
    shutil.copytree(full, cut)
    os.remove(cut / "lora" / "model.pth.tar-2")
    (cut / "lora" / "checkpoint").write_text("model.pth.tar-1\n")
    resumed = run_train(*lora_args(replica, deep_clip_file, cut, *opts))
    assert resumed.start_epoch == 1 and resumed.sched.last_epoch == 2
    done = load_checkpoint(os.path.join(cut, "lora", "model.pth.tar-2"))["state_dict"]
    reference = load_checkpoint(os.path.join(full, "lora", "model.pth.tar-2"))["state_dict"]
    for key in reference:
        torch.testing.assert_close(done[key], reference[key], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("opts, message", [
    (("TRAINER.CLIP_LORA.ENCODER", "image"), "TRAINER.CLIP_LORA.ENCODER must be one of text, vision, both, got 'image'."),
    (("TRAINER.CLIP_LORA.PARAMS", "['q', 'x']"), "TRAINER.CLIP_LORA.PARAMS must list some of q, k, v, o"),
    (("TRAINER.CLIP_LORA.POSITION", "top"), "TRAINER.CLIP_LORA.POSITION must be one of bottom, mid, up"),
    (("DATASET.NUM_SHOTS", -1), "CLIP-LoRA trains TRAINER.CLIP_LORA.N_ITERS x shots iterations, but DATASET.NUM_SHOTS is -1"),
])
def test_lora_bad_input_is_one_sentence(replica, deep_clip_file, tmp_path, opts, message):
    with pytest.raises(ConfigError) as info:
        run_train(*lora_args(replica, deep_clip_file, tmp_path / "bad", *opts))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_lora_vision_on_a_resnet_is_one_sentence(replica, tmp_path):
    with pytest.raises(ConfigError, match="CLIP-LoRA adapts a ViT's attention"):
        run_train(*lora_args(replica, tiny_clip(tmp_path, "resnet"), tmp_path / "bad"))


def test_lora_protocol():
    p = clip_lora.CLIP_LoRA.protocol
    assert (p.label, p.end_to_end, p.evaluations) == ("CLIP-LoRA", True, ())
    for family in ("vit_b16", "vit_b32", "vit_l14"):
        assert os.path.isfile(os.path.join(ROOT, "configs", "trainers", "CLIP_LoRA", f"{p.config('dtd', 4, family)}.yaml"))


# ------------------------------------------------------------------------------------ PromptSRC


def promptsrc_cfg(**keys):
    cfg = extend_cfg(get_cfg_default())
    for key, value in keys.items():
        cfg.TRAINER.PROMPTSRC[key] = value
    return cfg.TRAINER.PROMPTSRC


def promptsrc_model(model=None, **keys):
    model = model or deep_clip()
    p = promptsrc_cfg(**keys)
    learner = promptsrc.VLPromptLearner(CLASSNAMES, model, p.N_CTX_TEXT, p.CTX_INIT)
    prompts = promptsrc.Checkpointed(learner, model, p)
    return model, promptsrc.CustomCLIP(model, prompts, promptsrc.template_features(model, CLASSNAMES)).eval()


def test_promptsrc_gpa_weights_by_hand():
    # 2 epochs around mean 2, std 1: densities e^-0.5 and 1, normalised
    assert promptsrc.gpa_weights(2, 1, 2) == pytest.approx([0.377541, 0.622459], abs=1e-6)
    # the published base-to-new setting (20 epochs, mean 15, std 1): the weights are (nearly) the unit
    # Gaussian's density itself, epoch 15 gets 1 / sqrt(2 pi)
    w = promptsrc.gpa_weights(15, 1, 20)
    assert w[14] == pytest.approx(0.398942, abs=1e-6) and w[13] == w[15] == pytest.approx(0.241971, abs=1e-6)
    assert sum(w) == pytest.approx(1.0)


def test_promptsrc_scl_losses_vanish_where_they_should():
    # no visual prompt: the prompted image features are zero-shot CLIP's, the image term is 0 exactly
    model, custom = promptsrc_model(PROMPT_DEPTH_VISION=0, PROMPT_DEPTH_TEXT=1)
    torch.manual_seed(8)
    images, label = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        _, _, terms = custom.losses(images, label, 25, 10)
        assert terms["scl_image"].item() == 0.0
        assert terms["scl_text"].item() > 0  # "a photo of a <class>." is not the 60-template average
        # with the ensemble replaced by the initial prompt's own features, every SCL term is 0: loss = CE
        custom.fixed_embeddings.copy_(custom.text_features())
        loss, logits, terms = custom.losses(images, label, 25, 10)
    assert terms["scl_text"].item() == pytest.approx(0.0, abs=1e-7)
    assert terms["scl_logits"].item() == pytest.approx(0.0, abs=1e-7)
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, label).item(), abs=1e-6)
    # the text side at depth 1, CTX_INIT's 4 tokens as context: the zero-shot prompt exactly
    expected = zero_shot_text(model, [f"a photo of a {c.replace('_', ' ')}." for c in CLASSNAMES])
    torch.testing.assert_close(custom.text_features(), expected, rtol=1e-5, atol=1e-5)


def test_promptsrc_template_ensemble_is_the_originals_60():
    assert len(promptsrc.IMAGENET_TEMPLATES) == 60 and promptsrc.IMAGENET_TEMPLATES[-1] == "itap of the {}."
    model = deep_clip()
    fixed = promptsrc.template_features(model, ["cat"])
    with torch.no_grad():  # raw features averaged (not normalised first), as the original
        want = model.encode_text(clip.tokenize([t.format("cat") for t in promptsrc.IMAGENET_TEMPLATES])).mean(0)
    torch.testing.assert_close(fixed[0], want, rtol=1e-5, atol=1e-5)


def test_promptsrc_protocol_per_dataset_rule():
    p = promptsrc.PromptSRC.protocol
    assert (p.label, p.end_to_end, p.evaluations) == ("PromptSRC", True, ("base2new", "dg"))
    assert p.config("caltech101", 4, "vit_b16") == "vit_b16_c2_ep50_batch4_4+4ctx_few_shot"
    assert p.config("eurosat", 4, "vit_b16") == "vit_b16_c2_ep50_batch4_4+4ctx_few_shot_gpa45"
    folder = os.path.join(ROOT, "configs", "trainers", "PromptSRC")
    for stem in (p.config("dtd", 1, "vit_b16"), p.config("imagenet", 1, "vit_b16"), p.extra["base2new_config"],
                 p.extra["dg_config"]):
        assert os.path.isfile(os.path.join(folder, f"{stem}.yaml"))
    cfg = get_cfg_default()
    extend_cfg(cfg)
    cfg.merge_from_file(os.path.join(folder, "vit_b16_c2_ep50_batch4_4+4ctx_few_shot_gpa45.yaml"))
    assert (cfg.TRAINER.PROMPTSRC.GPA_MEAN, cfg.TRAINER.PROMPTSRC.GPA_STD, cfg.OPTIM.MAX_EPOCH) == (45, 5, 50)


def promptsrc_args(replica, clip_file, out, *opts, flags=()):
    return ["--root", replica, "--seed", 1, "--trainer", "PromptSRC", "--dataset-config-file",
            os.path.join(ROOT, "configs/datasets/eurosat.yaml"), "--config-file",
            os.path.join(ROOT, "configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml"), "--output-dir", out,
            "--backbone", clip_file, *flags, "DATASET.NUM_SHOTS", 2, "INPUT.SIZE", "(32, 32)",
            "DATALOADER.NUM_WORKERS", 0, "DATALOADER.TRAIN_X.BATCH_SIZE", 20, "OPTIM.MAX_EPOCH", 2, "OPTIM.LR", 0.05,
            "TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION", 3, "TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", 3,
            "TRAINER.PROMPTSRC.GPA_MEAN", 2, "TRAINER.PROMPTSRC.GPA_STD", 1, "TRAIN.CHECKPOINT_FREQ", 1, *opts]


PROMPTSRC_KEYS = {"prompt_learner.ctx", "prompt_learner.token_prefix", "prompt_learner.token_suffix", "image_encoder.VPT",
                  *(f"{t}_encoder.transformer.resblocks.{j}.VPT_shallow" for t in ("image", "text") for j in (1, 2))}


def test_promptsrc_trains_with_gpa_and_resumes_to_the_same_average(replica, deep_clip_file, tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    trainer = run_train(*promptsrc_args(replica, deep_clip_file, full))
    text = (full / "log.txt").read_text()
    assert trainer.feature_store is None and "Feature cache off: PromptSRC's prompts" in text
    assert "Using GPA model for final inference..." in text and "GPA: epoch weights 0.378, 0.622" in text
    assert re.search(r"^WARNING: .*PREC fp16 needs a GPU; running in fp32 on the CPU$", text, re.M)
    folder = full / "VLPromptLearner"
    first = load_checkpoint(os.path.join(folder, "model.pth.tar-1"))["state_dict"]
    last = load_checkpoint(os.path.join(folder, "model.pth.tar-2"))["state_dict"]
    learnt = PROMPTSRC_KEYS - {"prompt_learner.token_prefix", "prompt_learner.token_suffix"}
    assert {k for k in last if not k.startswith("gpa.")} == PROMPTSRC_KEYS
    w1, w2 = promptsrc.gpa_weights(2, 1, 2)
    for key in learnt:
        gpa = key.replace(".", "__")
        # after epoch 1 the running sum is w1 * the prompts; the final prompts are the sum after epoch 2
        torch.testing.assert_close(first[f"gpa.{gpa}"], w1 * first[key])
        torch.testing.assert_close(last[key], last[f"gpa.{gpa}"])
        raw = (last[key] - w1 * first[key]) / w2  # epoch 2's own prompts: they moved on from epoch 1's
        assert (raw - first[key]).abs().max() > 1e-6
    # resumed from the epoch-1 checkpoint: the same average (the original's restarts the sum there)
    shutil.copytree(full, cut)
    os.remove(cut / "VLPromptLearner" / "model.pth.tar-2")
    (cut / "VLPromptLearner" / "checkpoint").write_text("model.pth.tar-1\n")
    resumed = run_train(*promptsrc_args(replica, deep_clip_file, cut))
    assert resumed.start_epoch == 1
    done = load_checkpoint(os.path.join(cut, "VLPromptLearner", "model.pth.tar-2"))["state_dict"]
    for key in learnt:
        torch.testing.assert_close(done[key], last[key], rtol=1e-5, atol=1e-7)

    # an original checkpoint (no gpa.*, the frozen CLIP copies saved too) evaluates here
    orig = tmp_path / "orig" / "VLPromptLearner"
    orig.mkdir(parents=True)
    state = {k: v for k, v in last.items() if not k.startswith("gpa.")}
    state["prompt_learner.ZS_image_encoder.conv1.weight"] = trainer.model.image_encoder.conv1.weight
    state["image_encoder.conv1.weight"] = trainer.model.image_encoder.conv1.weight
    torch.save({"state_dict": state, "epoch": 2}, orig / "model.pth.tar-2")
    run_train(*promptsrc_args(replica, deep_clip_file, tmp_path / "eval",
                              flags=("--eval-only", "--model-dir", tmp_path / "orig", "--load-epoch", 2)))
    assert accuracies(tmp_path / "eval" / "log.txt") == accuracies(full / "log.txt")[-1:]


@pytest.mark.parametrize("opts, message", [
    (("TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", 0), "TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT must be a whole number of at least 1"),
    (("TRAINER.PROMPTSRC.GPA_STD", 0), "TRAINER.PROMPTSRC.GPA_STD must be above 0, got 0."),
])
def test_promptsrc_bad_input_is_one_sentence(replica, deep_clip_file, tmp_path, opts, message):
    with pytest.raises(ConfigError) as info:
        run_train(*promptsrc_args(replica, deep_clip_file, tmp_path / "bad", *opts))
    assert message in str(info.value) and "\n" not in str(info.value)


TOWER_CONFIGS = sorted(p for m in ("MaPLe", "PromptSRC", "CLIP_LoRA")
                       for p in glob.glob(os.path.join(ROOT, "configs", "trainers", m, "*.yaml")))


@pytest.mark.parametrize("path", TOWER_CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_published_configs_load(path):
    cfg = extend_cfg(get_cfg_default())
    cfg.merge_from_file(path)
    assert cfg.MODEL.BACKBONE.NAME.startswith("ViT-")
