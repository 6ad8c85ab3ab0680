"""The Dassl surface a CoOp-family trainer relies on: LR convention, stdout in log.txt, names, registry."""
import math
import os

import pytest

import dassl_toys
import trainers  # noqa: F401  (ours register now, not inside a test's patched registry)
from helpers import make_image_folder, run_train


@pytest.fixture
def toy(tmp_path, monkeypatch):
    dassl_toys.registered(monkeypatch)
    data = make_image_folder(tmp_path / "data", per_class=8)
    cfg = dassl_toys.write_toy_config(tmp_path / "toy.yaml")
    return data, cfg, tmp_path


def toy_args(data, cfg, out, *opts):
    return ["--root", data, "--seed", 1, "--trainer", "CoOpIdiomToy", "--config-file", cfg,
            "--output-dir", out, *opts]


def dassl_lr(epoch, base_lr=0.002, max_epoch=6):
    """Dassl's ConstantWarmupScheduler over CosineAnnealingLR(T_max=max_epoch), 1-based epochs:
    epoch 1 at WARMUP_CONS_LR, then cosine restarted at epoch 2 (WARMUP_RECOUNT)."""
    if epoch == 1:
        return 1e-5
    return 0.5 * base_lr * (1 + math.cos(math.pi * (epoch - 2) / max_epoch))


def test_lr_per_epoch_is_dassl_schedule_for_a_trainer_stepping_at_its_last_batch(toy):
    data, cfg, tmp = toy
    trainer = run_train(*toy_args(data, cfg, tmp / "out"))
    assert trainer.lr_per_epoch == pytest.approx([dassl_lr(e) for e in range(1, 7)], rel=1e-9)


def test_lr_after_resume_continues_the_same_schedule(toy, monkeypatch):
    data, cfg, tmp = toy
    monkeypatch.setattr(dassl_toys.CoOpIdiomToy, "stop_at_epoch", 4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_train(*toy_args(data, cfg, tmp / "out", "TRAIN.CHECKPOINT_FREQ", 1))
    monkeypatch.setattr(dassl_toys.CoOpIdiomToy, "stop_at_epoch", None)
    resumed = run_train(*toy_args(data, cfg, tmp / "out", "TRAIN.CHECKPOINT_FREQ", 1))
    assert resumed.lr_per_epoch == pytest.approx([dassl_lr(e) for e in range(4, 7)], rel=1e-9)


def porting_rows():
    """(dassl name, our name) of every row of docs/porting.md we provide."""
    import re

    text = open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs", "porting.md")).read()
    rows = re.findall(r"^\| `(dassl\.[\w.]+)`[^|]*\| (`engine\.[\w.]+`|—) \|", text, flags=re.M)
    return [(dassl, ours.strip("`")) for dassl, ours in rows if ours != "—"]


def test_porting_doc_lists_what_coop_family_code_imports():
    listed = {dassl for dassl, _ in porting_rows()}
    for name in ("dassl.engine.TrainerXU", "dassl.utils.collect_env_info", "dassl.data.DatasetWrapper",
                 "dassl.utils.load_pretrained_weights", "dassl.optim.build_lr_scheduler",
                 "dassl.metrics.compute_accuracy", "dassl.config.get_cfg_default"):
        assert name in listed, name
    assert len(listed) >= 40


@pytest.mark.parametrize("dassl_name, our_name", porting_rows())
def test_every_listed_dassl_name_imports_from_engine_under_the_same_name(dassl_name, our_name):
    import importlib

    module, name = our_name.rsplit(".", 1)
    assert name == dassl_name.rsplit(".", 1)[1]
    dassl_module = dassl_name.rsplit(".", 1)[0]
    # dassl.engine.X -> engine.X; dassl.<sub>.X -> engine.<sub>.X
    expected = "engine" if dassl_module == "dassl.engine" else "engine" + dassl_module[len("dassl"):]
    assert module == expected
    assert getattr(importlib.import_module(module), name) is not None


def test_collect_env_info_names_torch_and_pillow():
    from engine.utils import collect_env_info

    info = collect_env_info()
    assert "PyTorch version" in info and "Pillow (" in info


def tiny_cfg(tmp_path, *opts):
    import datasets  # noqa: F401  (registers ImageFolder)
    from engine.config import get_cfg_default, merge_from_file, merge_from_list

    data = make_image_folder(tmp_path / "data", per_class=8)
    cfg = get_cfg_default()
    merge_from_file(cfg, dassl_toys.write_toy_config(tmp_path / "toy.yaml"))
    merge_from_list(cfg, ["DATASET.ROOT", data, "SEED", 1, *opts])
    return cfg


def test_dataset_wrapper_has_dassl_signature_and_items(tmp_path):
    import torch
    from torchvision import transforms as T

    from engine.data import DatasetWrapper
    from engine.data.datasets import build_dataset

    cfg = tiny_cfg(tmp_path, "DATALOADER.K_TRANSFORMS", 2, "DATALOADER.RETURN_IMG0", True)
    items = build_dataset(cfg).train_x
    crop = T.Compose([T.RandomResizedCrop(8), T.ToTensor()])
    wrapper = DatasetWrapper(cfg, items, transform=[crop, crop], is_train=True)
    item = wrapper[3]
    assert set(item) == {"img", "img2", "img0", "label", "domain", "impath", "index"}
    assert item["index"] == 3 and item["label"] == items[3].label and item["impath"] == items[3].impath
    assert isinstance(item["img"], list) and len(item["img"]) == 2  # K_TRANSFORMS augmentations
    assert not torch.equal(item["img"][0], item["img"][1])  # ... each its own draw
    assert torch.equal(wrapper[3]["img"][0], item["img"][0])  # ... seeded: the same on a re-read
    assert item["img0"].shape == (3, 8, 8)  # resized, not augmented
    test_item = DatasetWrapper(cfg, items, transform=crop)[0]  # is_train defaults to False: one image
    assert torch.is_tensor(test_item["img"])


class TaggingWrapper:
    """A user's dataset wrapper (Dassl's signature) that marks its items."""

    def __new__(cls, cfg, data_source, transform=None, is_train=False):
        from engine.data import DatasetWrapper

        class Tagged(DatasetWrapper):
            def __getitem__(self, key):
                item = super().__getitem__(key)
                item["tag"] = "user" if self.is_train else "user-test"
                return item

        return Tagged(cfg, data_source, transform=transform, is_train=is_train)


def test_data_manager_honours_dataset_wrapper_and_custom_transforms(tmp_path):
    from torchvision import transforms as T

    from engine.data import DataManager

    cfg = tiny_cfg(tmp_path)
    tfm = T.Compose([T.Resize((5, 5)), T.ToTensor()])
    dm = DataManager(cfg, custom_tfm_train=tfm, custom_tfm_test=tfm, dataset_wrapper=TaggingWrapper)
    batch = next(iter(dm.train_loader_x))
    assert batch["tag"] == ["user"] * 4 and batch["img"].shape[-2:] == (5, 5)
    assert next(iter(dm.test_loader))["tag"][0] == "user-test"


def test_parse_batch_train_returns_dassl_input_and_label(toy):
    import torch

    data, cfg, tmp = toy
    trainer = run_train(*toy_args(data, cfg, tmp / "out", "OPTIM.MAX_EPOCH", 1))
    batch = next(iter(trainer.train_loader_x))
    parsed = trainer.parse_batch_train(batch)
    assert len(parsed) == 2
    assert torch.equal(parsed[0], batch["img"]) and torch.equal(parsed[1], batch["label"])


def test_trainer_xu_iterates_both_loaders_by_count_iter(tmp_path):
    import torch.nn as nn

    from engine import TrainerXU

    cfg = tiny_cfg(tmp_path, "DATALOADER.TRAIN_U.SAME_AS_X", False, "DATALOADER.TRAIN_U.BATCH_SIZE", 2,
                   "TRAIN.COUNT_ITER", "train_u")

    class XU(TrainerXU):
        def build_data_loader(self):
            from engine.data.data_manager import build_data_loader

            super().build_data_loader()
            unlabelled = self.dm.dataset.train_x[:6]  # 3 batches of 2
            self.train_loader_u = build_data_loader(self.cfg, "RandomSampler", unlabelled, 2,
                                                    tfm=self.dm.tfm_train, is_train=True)

        def build_model(self):
            import torch

            self.model = nn.Linear(1, 1)
            self.register_model("m", self.model, torch.optim.SGD(self.model.parameters(), lr=0.1))
            self.seen = []

        def forward_backward(self, batch_x, batch_u):
            x, label, u = self.parse_batch_train(batch_x, batch_u)
            self.seen.append((x.shape[0], u.shape[0]))
            return {"loss": 0.0}

    from engine.config import merge_from_list

    merge_from_list(cfg, ["OUTPUT_DIR", str(tmp_path / "xu"), "OPTIM.MAX_EPOCH", 1, "TEST.NO_TEST", True])
    trainer = XU(cfg)
    trainer.before_epoch()
    trainer.run_epoch()
    # train_u (3 batches of 2) sets the epoch's length; train_x (batches of 4) restarts as needed
    assert trainer.seen == [(4, 2)] * 3


# ---- a CoOp-idiom trainer file, imports renamed only, through --trainer-dir ----------------------
COOP_IDIOM_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "coop_idiom")


@pytest.fixture
def coop_idiom(tmp_path, monkeypatch):
    """OpenAI's ViT-B/32 file where clip._download looks (a tiny CLIP with fp16 matrices, as OpenAI's
    release stores them), an image folder, a tiny config, a copy of tests/coop_idiom (a folder is
    imported once per process, and the registry is restored after each test)."""
    import shutil

    from clip.weights import CACHE_ENV
    from clip_fixtures import save_tiny_clip
    from engine import TRAINER_REGISTRY
    from helpers import write_tiny_config

    monkeypatch.setattr(TRAINER_REGISTRY, "_obj_map", dict(TRAINER_REGISTRY._obj_map))  # ours back afterwards
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "clip_cache"))
    os.makedirs(tmp_path / "clip_cache")
    save_tiny_clip(tmp_path / "clip_cache" / "ViT-B-32.pt", vision="vit", half=True)
    data = make_image_folder(tmp_path / "data")
    folder = shutil.copytree(COOP_IDIOM_DIR, tmp_path / "coop_idiom")
    return data, write_tiny_config(tmp_path / "cfg.yaml", "ViT-B/32", epochs=2, batch=4), folder


def test_a_coop_idiom_trainer_file_runs_from_trainer_dir_as_our_coop(coop_idiom, tmp_path):
    """tests/coop_idiom/prompt_tuning.py is written as CoOp's trainers/coop.py is (OpenAI's clip:
    `clip._MODELS`, `clip._download`, `clip.build_model`, `transformer` on (L, N, D); Dassl's
    TrainerX, `update_lr()` at the last batch, `print`, `cfg.TRAINER.COOP`, no extend_cfg of its own)
    with only `dassl` renamed to `engine`. Loaded with --trainer-dir it replaces our CoOp and ends
    where our CoOp ends on the same run (end to end, fp32), and evaluates its own checkpoint again."""
    import torch

    from helpers import accuracies

    data, cfg, folder = coop_idiom
    opts = ("DATASET.NUM_SHOTS", 4, "TRAINER.COOP.CTX_INIT", "a photo of a", "TRAINER.COOP.PREC", "fp32",
            "OPTIM.NAME", "sgd", "OPTIM.LR", 0.05, "FEATURE_CACHE.ENABLED", False)
    common = ("--root", data, "--seed", 1, "--trainer", "CoOp", "--config-file", cfg)

    ours = run_train(*common, "--output-dir", tmp_path / "ours", *opts)
    ported = run_train(*common, "--trainer-dir", folder, "--output-dir", tmp_path / "ported", *opts)
    assert type(ported).__module__.endswith(".prompt_tuning") and type(ours).__module__ == "trainers.coop"
    log = (tmp_path / "ported" / "log.txt").read_text()
    for printed in ('Initial context: "a photo of a"', "Building custom CLIP"):  # its prints reach log.txt
        assert printed in log
    assert ported.sched.last_epoch == 2  # one LR step per epoch, at its last batch
    import clip

    with torch.no_grad():
        start = ours.clip_model.token_embedding(clip.tokenize("a photo of a"))[0, 1:5]
    moved = (ported.model.prompt_learner.ctx - start).abs().max().item()
    apart = (ported.model.prompt_learner.ctx - ours.model.prompt_learner.ctx).abs().max().item()
    print(f"context moved {moved:.3g}, the two trainers' contexts differ by {apart:.3g}")
    assert moved > 1e-2 and apart < 1e-3 * moved  # the same steps; ours batches the text side differently
    trained = accuracies(tmp_path / "ported" / "log.txt")
    assert trained == accuracies(tmp_path / "ours" / "log.txt")

    run_train(*common, "--trainer-dir", folder, "--output-dir", tmp_path / "eval", "--eval-only",
              "--model-dir", tmp_path / "ported", "--load-epoch", 2, *opts)
    assert accuracies(tmp_path / "eval" / "log.txt") == trained


def test_a_zsclip_idiom_file_evaluates_from_trainer_dir_without_model_dir(coop_idiom, tmp_path):
    """tests/coop_idiom/zero_shot.py, in the idiom of CoOp's trainers/zsclip.py (a relative import of
    its sibling, fp16 CLIP as build_model gives it, no registered model): --eval-only runs without
    --model-dir, and its logits are ours (fp32) to fp16 precision."""
    import torch

    from helpers import accuracies

    data, cfg, folder = coop_idiom
    common = ("--root", data, "--trainer", "ZeroshotCLIP", "--config-file", cfg, "--eval-only")
    ours = run_train(*common, "--output-dir", tmp_path / "ours", "FEATURE_CACHE.ENABLED", False,
                     "TRAINER.ZeroshotCLIP.PREC", "fp32")
    ported = run_train(*common, "--trainer-dir", folder, "--output-dir", tmp_path / "ported")
    assert type(ported).__module__.endswith(".zero_shot") and ported.clip_model.dtype == torch.float16
    assert "Prompts: ['a photo of a bird.'" in (tmp_path / "ported" / "log.txt").read_text()
    assert len(accuracies(tmp_path / "ported" / "log.txt")) == 1
    images = next(iter(ours.test_loader))["img"]
    with torch.no_grad():
        got, expected = ported.model_inference(images).float(), ours.model_inference(images)
    tolerance = 5e-3 * expected.abs().max().item()  # fp16 matrices against fp32
    spread = (expected - expected.mean(dim=1, keepdim=True)).abs().max().item()  # what a wrong prompt moves
    print(f"logits differ by {(got - expected).abs().max().item():.3g}; tolerance {tolerance:.3g}, spread {spread:.3g}")
    assert spread > 5 * tolerance
    torch.testing.assert_close(got, expected, rtol=0, atol=tolerance)
