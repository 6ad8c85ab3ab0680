"""Published trainer files run unchanged: the idioms of KgCoOp, ProGrad, MaPLe, PromptSRC and PLOT.

tests/published_idiom/ holds trainer files written for these tests in those repos' idioms (imports
renamed only): ``deep_prompt`` (MaPLe: its own ``clip/`` with ``build_model(state_dict,
design_details)``, extend_cfg in a file beside it that defines CoOp's group again), ``token_pool``
(PLOT: its own ``clip/`` whose attention pool returns every token), ``grad_projection`` (ProGrad /
KgCoOp: the Dassl fork's ``prograd_backward_and_update``, a bool ``TRAINER.COOP.CTX_INIT``, a ``LOSS``
group). ``shipped_clip`` is copied into a folder as its ``clip/``.
"""
import os
import shutil
import sys

import pytest
import torch

import trainers
from helpers import accuracies, make_image_folder, run_train, write_tiny_config

IDIOM_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "published_idiom")


def folder(tmp_path, name, with_clip):
    """A fresh copy (a folder is imported once per process), with the shipped clip/ when asked."""
    dst = shutil.copytree(os.path.join(IDIOM_DIR, name), tmp_path / name)
    if with_clip:
        shutil.copytree(os.path.join(IDIOM_DIR, "shipped_clip"), dst / "clip")
    return dst


@pytest.fixture
def published(tmp_path, monkeypatch):
    """OpenAI's ViT-B/32 and RN50 files where clip._download looks (tiny CLIPs, fp16 matrices), an image
    folder, the three idiom folders; our registry is restored after each test."""
    from clip.weights import CACHE_ENV
    from clip_fixtures import save_tiny_clip
    from engine import TRAINER_REGISTRY

    monkeypatch.setattr(TRAINER_REGISTRY, "_obj_map", dict(TRAINER_REGISTRY._obj_map))
    monkeypatch.setattr(trainers, "_modules", dict(trainers._modules))  # the folders' extend_cfg go too
    monkeypatch.setattr(trainers, "_folders", dict(trainers._folders))
    cache = tmp_path / "clip_cache"
    os.makedirs(cache)
    monkeypatch.setenv(CACHE_ENV, str(cache))
    save_tiny_clip(cache / "ViT-B-32.pt", vision="vit", half=True)
    save_tiny_clip(cache / "RN50.pt", vision="resnet", half=True)
    return {
        "data": make_image_folder(tmp_path / "data"),
        "deep_prompt": folder(tmp_path, "deep_prompt", with_clip=True),
        "token_pool": folder(tmp_path, "token_pool", with_clip=True),
        "grad_projection": folder(tmp_path, "grad_projection", with_clip=False),
        "cache": cache,
    }


def package_of(path):
    return trainers._folders[os.path.realpath(path)]


def test_each_folder_imports_its_own_clip_and_everything_else_keeps_ours(published, tmp_path):
    import clip as ours
    import clip.model
    import trainers.coop

    (published["token_pool"] / "lazy.py").write_text(
        "def which():\n    from clip import clip\n    import clip.model as model\n    return clip, model\n")
    trainers.load_trainer_dirs([published["deep_prompt"], published["token_pool"], published["grad_projection"]])
    deep, pool, grad = (package_of(published[k]) for k in ("deep_prompt", "token_pool", "grad_projection"))
    assert deep != pool
    for package, name in ((deep, "deep_prompt"), (pool, "token_pool")):
        module = sys.modules[f"{package}.{name}"]
        assert module.clip.__name__ == f"{package}.clip.clip"  # `from clip import clip`
        assert module.clip is sys.modules[f"{package}.clip"].clip
        # OpenAI's checksum-or-download is replaced by ours (the copy's would raise offline)
        assert module.clip._download is ours.clip._download
    tokenizer = sys.modules[f"{deep}.deep_prompt"]._Tokenizer  # `from clip.simple_tokenizer import ...`
    assert tokenizer.__module__ == f"{deep}.clip.simple_tokenizer"
    lazy_clip, lazy_model = sys.modules[f"{pool}.lazy"].which()  # an import inside a function, run later
    assert lazy_clip.__name__ == f"{pool}.clip.clip" and lazy_model.__name__ == f"{pool}.clip.model"
    # a folder without clip/, our trainers and this test module: ours, before and after
    assert sys.modules[f"{grad}.grad_projection"].clip is ours.clip
    assert trainers.coop.clip is ours and sys.modules["clip"] is ours
    import importlib

    assert importlib.import_module("clip.model") is clip.model and clip.model.__name__ == "clip.model"


def test_a_maple_idiom_file_trains_on_its_folders_build_model_with_design_details(published, tmp_path):
    """MaPLe's `clip.build_model(state_dict, design_details)` (ours takes one argument) and its image
    tower taking prompt tokens: the folder's copy is what the trainer builds, trains and evaluates."""
    cfg = write_tiny_config(tmp_path / "cfg.yaml", "ViT-B/32", epochs=2, batch=4)
    common = ("--root", published["data"], "--seed", 1, "--trainer", "DeepPrompt", "--config-file", cfg,
              "--trainer-dir", published["deep_prompt"], "DATASET.NUM_SHOTS", 4, "TRAINER.DEEPPROMPT.PREC", "fp32",
              "FEATURE_CACHE.ENABLED", False)
    trainer = run_train(*common, "--output-dir", tmp_path / "out")
    package = package_of(published["deep_prompt"])
    assert trainer.design_details == {"trainer": "DeepPrompt", "vision_ctx": 2}
    assert type(trainer.model.image_encoder).__module__ == f"{package}.clip.model"
    assert type(trainer.model.image_encoder).__name__ == "PromptedVisionTransformer"
    learner = trainer.model.prompt_learner
    images = next(iter(trainer.test_loader))["img"][:2]
    with torch.no_grad():  # the prompt tokens reach the image tower: other prompts, other features
        with_ctx = trainer.model.image_encoder(images, learner.proj(learner.ctx[:2]))
        without = trainer.model.image_encoder(images)
    assert (with_ctx - without).abs().max() > 1e-4
    trained = accuracies(tmp_path / "out" / "log.txt")
    assert len(trained) == 1
    run_train(*common, "--output-dir", tmp_path / "eval", "--eval-only", "--model-dir", tmp_path / "out",
              "--load-epoch", 2)
    assert accuracies(tmp_path / "eval" / "log.txt") == trained


def test_a_plot_idiom_file_gets_every_token_of_its_folders_attention_pool(published, tmp_path):
    """PLOT's copy of clip returns ((H W) + 1, N, D) from the attention pool; ours returns the pooled
    (N, D). The trainer gets the folder's, whose first token is our pooled feature."""
    from clip import clip as ours

    cfg = write_tiny_config(tmp_path / "cfg.yaml", "RN50", epochs=2, batch=4)
    trainer = run_train("--root", published["data"], "--seed", 1, "--trainer", "TokenPool", "--config-file", cfg,
                        "--trainer-dir", published["token_pool"], "--output-dir", tmp_path / "out",
                        "DATASET.NUM_SHOTS", 4, "TRAINER.TOKENPOOL.PREC", "fp32", "FEATURE_CACHE.ENABLED", False)
    images = next(iter(trainer.test_loader))["img"][:3]
    state = torch.load(published["cache"] / "RN50.pt")
    reference = ours.build_model(state).float().eval()
    with torch.no_grad():
        tokens = trainer.model.image_encoder(images)
        pooled = reference.visual(images)
    assert tokens.shape == (1 * 1 + 1, 3, pooled.shape[-1])  # 32 px / 32: one position + the pooled token
    torch.testing.assert_close(tokens[0], pooled, rtol=1e-4, atol=1e-5)
    assert len(accuracies(tmp_path / "out" / "log.txt")) == 1


def test_a_prograd_idiom_file_steps_with_the_forks_prograd_backward_and_update(published, tmp_path, monkeypatch):
    from engine.dassl_forks import DasslForkMethods

    calls = []
    original = DasslForkMethods.prograd_backward_and_update

    def spy(self, loss_a, loss_b, lambda_=1, names=None):
        calls.append(lambda_)
        return original(self, loss_a, loss_b, lambda_, names)

    monkeypatch.setattr(DasslForkMethods, "prograd_backward_and_update", spy)
    cfg = write_tiny_config(tmp_path / "cfg.yaml", "ViT-B/32", epochs=2, batch=4)
    # CTX_INIT True is a bool as in KgCoOp's and ProGrad's yaml files: their default (False) is the
    # one this run sees, ours ("") would refuse it
    trainer = run_train("--root", published["data"], "--seed", 1, "--trainer", "GradProjection",
                        "--config-file", cfg, "--trainer-dir", published["grad_projection"],
                        "--output-dir", tmp_path / "out", "DATASET.NUM_SHOTS", 4, "TRAINER.COOP.PREC", "fp32",
                        "TRAINER.COOP.CTX_INIT", True, "LOSS.NAME", "prograd", "LOSS.LAMBDA", 0.5,
                        "FEATURE_CACHE.ENABLED", False)
    assert calls == [0.5] * (2 * trainer.num_batches)
    log = (tmp_path / "out" / "log.txt").read_text()
    assert "xe_loss" in log and "kl_loss" in log and 'Initial context: "a photo of a"' in log


class _OneParameter(torch.nn.Module):
    def __init__(self, value):
        super().__init__()
        self.p = torch.nn.Parameter(torch.tensor(value))


def _fork_step(a, b, lambda_):
    """One prograd_backward_and_update with loss_a = a . p and loss_b = b . p (gradients a and b), SGD lr 1."""
    from engine.trainer import TrainerBase

    trainer = TrainerBase()
    trainer.epoch = 0
    model = _OneParameter([0.0, 0.0])
    trainer.register_model("m", model, torch.optim.SGD(model.parameters(), lr=1.0))
    loss_a = (torch.tensor(a) * model.p).sum()
    loss_b = (torch.tensor(b) * model.p).sum()
    trainer.prograd_backward_and_update(loss_a, loss_b, lambda_)
    return (-model.p.detach()).tolist()  # the gradient the step used


@pytest.mark.parametrize("a, b, lambda_, used", [
    # g_a . g_b < 0: u = (-1, 1)/sqrt(2), g_a . u = -1/sqrt(2): g = (1, 0) + lambda/2 (-1, 1)
    ((1.0, 0.0), (-1.0, 1.0), 1.0, (0.5, 0.5)),
    ((1.0, 0.0), (-1.0, 1.0), 0.5, (0.75, 0.25)),
    # no conflict: the task gradient unchanged
    ((1.0, 0.0), (1.0, 1.0), 1.0, (1.0, 0.0)),
    # opposite: lambda 1 removes all of it
    ((2.0, 0.0), (-3.0, 0.0), 1.0, (0.0, 0.0)),
])
def test_prograd_backward_and_update_removes_the_part_against_loss_b(a, b, lambda_, used):
    assert _fork_step(a, b, lambda_) == pytest.approx(used, abs=1e-6)


def test_two_folders_defining_one_group_merge_and_each_trainer_keeps_its_defaults(published, tmp_path, caplog):
    """The issue's two failures: with KgCoOp's style of folder loaded our CoOp config failed (`Wrong value
    type for TRAINER.COOP.CTX_INIT`), and with two such folders a key of the first was gone
    (`Unknown config key TRAINER.COOP.W`)."""
    from engine.config import get_cfg_default, merge_from_list

    trainers.load_trainer_dirs([published["grad_projection"], published["deep_prompt"]])
    with caplog.at_level("INFO", logger="trainers"):
        ours = trainers.extend_cfg(get_cfg_default(), trainer="CoOp")
    # keys of every definition, ours kept where they disagree: our CoOp's published defaults
    assert ours.TRAINER.COOP.CTX_INIT == "" and ours.TRAINER.COOP.N_CTX == 16
    assert ours.TRAINER.COOP.W == 1.0 and ours.LOSS.LAMBDA == 1.0 and ours.TRAINER.DEEPPROMPT.N_CTX == 2
    merge_from_list(ours, ["TRAINER.COOP.CTX_INIT", "a photo of a", "TRAINER.COOP.W", 8.0])
    assert any("TRAINER.COOP.CTX_INIT" in r.getMessage() and "grad_projection.py" in r.getMessage()
               for r in caplog.records)

    theirs = trainers.extend_cfg(get_cfg_default(), trainer="GradProjection")
    assert theirs.TRAINER.COOP.CTX_INIT is False and theirs.TRAINER.COOP.N_CTX == 4
    merge_from_list(theirs, ["TRAINER.COOP.CTX_INIT", True])
    # a trainer from neither file: the first definition (ours) stays
    third = trainers.extend_cfg(get_cfg_default(), trainer="DeepPrompt")
    assert third.TRAINER.COOP.CTX_INIT == "" and third.TRAINER.COOP.N_CTX == 16 and third.TRAINER.COOP.W == 1.0


def test_our_coop_runs_with_a_folder_that_redefines_its_group_loaded(published, tmp_path):
    cfg = write_tiny_config(tmp_path / "cfg.yaml", "ViT-B/32", epochs=1, batch=4)
    trainer = run_train("--root", published["data"], "--seed", 1, "--trainer", "CoOp", "--config-file", cfg,
                        "--trainer-dir", published["grad_projection"], "--output-dir", tmp_path / "out",
                        "DATASET.NUM_SHOTS", 2, "TRAINER.COOP.CTX_INIT", "a photo of a", "TRAINER.COOP.PREC", "fp32")
    assert type(trainer).__module__ == "trainers.coop" and trainer.cfg.TRAINER.COOP.N_CTX == 16


def test_a_key_that_is_a_group_in_one_file_and_a_value_in_another_is_one_sentence(published, tmp_path):
    from engine.config import get_cfg_default
    from engine.errors import ConfigError

    bad = tmp_path / "bad"
    os.makedirs(bad)
    (bad / "flat.py").write_text("def extend_cfg(cfg):\n    cfg.TRAINER.COOP = 'fp16'\n")
    trainers.load_trainer_dirs([bad])
    with pytest.raises(ConfigError, match=r"TRAINER\.COOP is a group in trainers/coop\.py but the value "
                                          r"'fp16' in .*flat\.py"):
        trainers.extend_cfg(get_cfg_default())


def test_dassl_renamed_literally_to_engine_imports_the_same_names():
    """docs/porting.md: `dassl.engine` -> `engine`; `sed s/dassl/engine/` (`engine.engine`) works too."""
    import engine
    from engine.engine import TRAINER_REGISTRY, SimpleTrainer, TrainerBase, TrainerX, TrainerXU, build_trainer

    assert (TRAINER_REGISTRY, TrainerX, TrainerXU, SimpleTrainer, TrainerBase, build_trainer) == (
        engine.TRAINER_REGISTRY, engine.TrainerX, engine.TrainerXU, engine.SimpleTrainer, engine.TrainerBase,
        engine.build_trainer)
