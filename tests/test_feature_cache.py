"""The feature cache (engine/features.py: FeatureStore, FeatureSource, CachedFeatureLoader) on a tiny CLIP, CPU.

What it must keep: cached training with TRAIN_VIEWS = MAX_EPOCH trains exactly like the
end-to-end loop; a second run encodes nothing; each part of the key (transform, backbone,
weights file, image, precision) invalidates just the entries it changes; a truncated file is
rebuilt; evaluation gives the same numbers with the cache on and off; the switch turns it off.
"""
import json
import os

import pytest
import torch
from PIL import Image
import yaml

from engine.config import get_cfg_default
from engine.data.data_manager import DatasetWrapper, EpochSampler, relative_impath, view_seed
from engine.data.transforms import build_transform
from engine.features import (
    CachedFeatureLoader, FeatureStore, default_cache_dir, format_size, image_key, split_transform)
from helpers import accuracies, make_image_folder, run_train, tiny_clip, write_tiny_config

EPOCHS = 4
N_TRAIN, N_TEST = 12, 9  # ImageFolder 50/20/30 split of 3 x 10 images, 4 shots


@pytest.fixture
def setup(tmp_path):
    data = make_image_folder(tmp_path / "data")
    cfg = write_tiny_config(tmp_path / "cfg.yaml", tiny_clip(tmp_path), epochs=EPOCHS, batch=4)
    return data, cfg, tmp_path


def train(setup, name, *opts, trainer="TaskRes", config=None, extra=()):
    data, cfg, tmp = setup
    out = tmp / name
    trainer = run_train("--root", data, "--seed", 1, "--trainer", trainer, "--config-file", config or cfg,
                        "--output-dir", out, *extra, "DATASET.NUM_SHOTS", 4, *opts)
    return trainer, out


def residual(trainer):
    return trainer.model.prompt_learner.text_feature_residuals.detach().clone()


def cache_files(root):
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".pt"))


def test_all_views_reproduce_the_end_to_end_loop(setup):
    e2e, _ = train(setup, "e2e", "FEATURE_CACHE.ENABLED", False)
    assert e2e.feature_store is None  # the encoder ran in the loop
    cached, _ = train(setup, "cached", "FEATURE_CACHE.TRAIN_VIEWS", EPOCHS)
    assert cached.feature_store.encoded == EPOCHS * N_TRAIN + N_TEST
    assert residual(e2e).abs().sum() > 0
    torch.testing.assert_close(residual(cached), residual(e2e), rtol=1e-4, atol=1e-6)
    # the comparison can tell views apart: one view for all epochs trains differently
    one_view, out = train(setup, "one_view", "FEATURE_CACHE.TRAIN_VIEWS", 1)
    assert (residual(one_view) - residual(e2e)).abs().max() > 1e-4
    # the run's config.yaml records the V it trained with
    assert yaml.safe_load((out / "config.yaml").read_text())["FEATURE_CACHE"]["TRAIN_VIEWS"] == 1


def test_second_run_hits_the_cache_and_logs_its_size(setup):
    first, out1 = train(setup, "run1")
    assert first.feature_store.encoded == 4 * N_TRAIN + N_TEST  # default TRAIN_VIEWS 4
    files = cache_files(os.environ["TASKRES_FEATURE_CACHE"])
    assert len(files) == 5  # 4 train views + 1 test bundle
    second, out2 = train(setup, "run2")
    assert second.feature_store.encoded == 0
    torch.testing.assert_close(residual(second), residual(first))
    log = (out2 / "log.txt").read_text()
    size = format_size(sum(os.path.getsize(f) for f in files))
    assert f"Feature cache holds {size} in {os.environ['TASKRES_FEATURE_CACHE']}" in log
    assert "Encoding" not in log
    # another seed augments every image differently (views are seeded by the run's seed):
    # all its training views are new, the test set is reused
    third, _ = train(setup, "seed2", extra=("--seed", 2))
    assert third.feature_store.encoded == 4 * N_TRAIN


@pytest.mark.parametrize("opts, train_views, test_views", [
    (("INPUT.RRCROP_SCALE", "(0.5, 1.0)"), 4 * N_TRAIN, 0),  # the test transform does not crop at random
    (("INPUT.PIXEL_MEAN", "[0.5, 0.5, 0.5]"), 4 * N_TRAIN, N_TEST),
    (("INPUT.INTERPOLATION", "nearest"), 4 * N_TRAIN, N_TEST),  # "bilinear", Dassl's default, reads as unset
    (("TRAINER.TaskRes.PREC", "amp"), 4 * N_TRAIN, N_TEST),
    (("OPTIM.LR", 0.5, "TRAINER.TaskRes.RESIDUAL_SCALE", 0.5), 0, 0),  # no change to a feature
    (("FEATURE_CACHE.TRAIN_VIEWS", 6, "OPTIM.MAX_EPOCH", 6), 2 * N_TRAIN, 0),  # only views 4 and 5 are new
])
def test_config_changes_invalidate_the_right_entries(setup, opts, train_views, test_views):
    train(setup, "before")
    after, _ = train(setup, "after", *opts)
    assert after.feature_store.encoded == train_views + test_views


def test_backbone_and_weights_file_invalidate_everything(setup):
    data, cfg, tmp = setup
    train(setup, "vit")
    resnet_cfg = write_tiny_config(tmp / "rn.yaml", tiny_clip(tmp, "resnet"), epochs=EPOCHS, batch=4)
    rn, _ = train(setup, "resnet", config=resnet_cfg)
    assert rn.feature_store.encoded == 4 * N_TRAIN + N_TEST
    again, _ = train(setup, "vit_again")
    assert again.feature_store.encoded == 0  # each backbone keeps its own entries
    weights = tiny_clip(tmp)
    st = os.stat(weights)
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the same name, another file
    touched, _ = train(setup, "vit_touched")
    assert touched.feature_store.encoded == 4 * N_TRAIN + N_TEST


def test_a_new_encoder_implementation_invalidates_everything(setup, monkeypatch):
    """Features cached by other encoder code (e.g. open_clip's model before clip/model.py) are never reused."""
    import trainers.clip_trainer as clip_trainer

    train(setup, "before")
    monkeypatch.setattr(clip_trainer, "ENCODER_IMPLEMENTATION", "clip.model-next")
    after, _ = train(setup, "after")
    assert after.feature_store.encoded == 4 * N_TRAIN + N_TEST


def test_a_changed_image_re_encodes_only_its_views(setup):
    first, _ = train(setup, "before")
    train_img, test_img = first.dm.dataset.train_x[0].impath, first.dm.dataset.test[0].impath
    for path in (train_img, test_img):
        Image.new("RGB", (40, 48), (10, 200, 30)).save(path)
    store_root = os.environ["TASKRES_FEATURE_CACHE"]

    def rows():  # (file, row count) of every bundle; a key's length varies with the image's size digits
        return sorted((f, len(torch.load(f, weights_only=True)["keys"])) for f in cache_files(store_root))

    before = rows()
    after, _ = train(setup, "after")
    assert after.feature_store.encoded == 4 + 1  # its 4 train views and its test view
    # the stale rows are replaced, not kept beside the new ones
    assert rows() == before
    data = setup[0]
    new_key = image_key(test_img, data)
    test_bundle = [f for f in cache_files(store_root) if "_test-" in os.path.basename(f)][0]
    keys = torch.load(test_bundle, weights_only=True)["keys"]
    assert new_key in keys and sum(k.startswith(relative_impath(test_img, data) + "|") for k in keys) == 1


def test_truncated_or_foreign_cache_file_is_rebuilt(setup, caplog):
    first, _ = train(setup, "before")
    root = os.environ["TASKRES_FEATURE_CACHE"]
    files = cache_files(root)
    train_bundle = [f for f in files if "_train-0-" in os.path.basename(f)][0]
    test_bundle = [f for f in files if "_test-" in os.path.basename(f)][0]
    with open(train_bundle, "r+b") as f:
        f.truncate(os.path.getsize(train_bundle) // 2)
    torch.save({"version": 999, "keys": [], "features": torch.zeros(0)}, test_bundle)
    rebuilt, out = train(setup, "after")
    assert rebuilt.feature_store.encoded == N_TRAIN + N_TEST
    log = (out / "log.txt").read_text()
    assert f"Feature cache file {train_bundle} is corrupt" in log and f"Feature cache file {test_bundle} is corrupt" in log
    torch.testing.assert_close(residual(rebuilt), residual(first))
    torch.load(train_bundle, weights_only=True)  # readable again
    assert train(setup, "third")[0].feature_store.encoded == 0


def test_evaluation_is_identical_with_the_cache_on_and_off(setup):
    _, trained = train(setup, "trained", "OPTIM.MAX_EPOCH", 20, "OPTIM.LR", 0.05)
    results = {}
    for enabled in (True, False):
        _, out = train(setup, f"eval_{enabled}", "FEATURE_CACHE.ENABLED", enabled,
                       extra=("--eval-only", "--model-dir", trained, "--load-epoch", 20))
        results[enabled] = json.loads((out / "results_test.json").read_text())
    assert results[True] == results[False]
    assert results[True]["macro_f1"] > 40  # a model that tells classes apart, so equality means something
    assert results[True]["accuracy"] == pytest.approx(accuracies(trained / "log.txt")[-1], abs=0.05)
    zs = {}
    for enabled in (True, False):
        _, out = train(setup, f"zs_{enabled}", "FEATURE_CACHE.ENABLED", enabled, trainer="ZeroshotCLIP",
                       extra=("--eval-only",))
        zs[enabled] = json.loads((out / "results_test.json").read_text())
    assert zs[True] == zs[False]


def test_switch_off_writes_nothing_and_config_dir_overrides_env(setup):
    root = os.environ["TASKRES_FEATURE_CACHE"]
    train(setup, "off", "FEATURE_CACHE.ENABLED", False)
    assert not os.path.exists(root)
    own = setup[2] / "own_cache"
    trainer, _ = train(setup, "own", "FEATURE_CACHE.DIR", own)
    assert trainer.feature_store.root == str(own) and len(cache_files(own)) == 5
    assert not os.path.exists(root)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TASKRES_FEATURE_CACHE", str(tmp_path / "env"))
    assert default_cache_dir() == str(tmp_path / "env")
    monkeypatch.delenv("TASKRES_FEATURE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == os.path.join(str(tmp_path / "xdg"), "taskres", "features")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == os.path.join(str(tmp_path / "home"), ".cache", "taskres", "features")


@pytest.mark.parametrize("is_train", [True, False])
def test_uint8_worker_transform_gives_the_same_input(tmp_path, is_train):
    cfg = get_cfg_default()
    cfg.INPUT.SIZE = (32, 32)
    cfg.INPUT.TRANSFORMS = ["random_resized_crop", "random_flip", "normalize"]
    full = build_transform(cfg, is_train)
    worker, to_input = split_transform(full)
    img = Image.open(os.path.join(make_image_folder(tmp_path, classes=("a",), per_class=1), "a", "0.jpg")).convert("RGB")
    torch.manual_seed(3)
    expected = full(img)
    torch.manual_seed(3)
    shipped = worker(img)
    assert shipped.dtype == torch.uint8
    torch.testing.assert_close(to_input(shipped[None])[0], expected, rtol=0, atol=1e-6)
    # a pipeline that does not end in ToTensor (+ Normalize) runs whole in the workers
    cfg.INPUT.TRANSFORMS = ["random_flip", "normalize", "instance_norm"]
    odd = build_transform(cfg, True)
    assert split_transform(odd)[0] is odd


def test_loader_replays_view_e_mod_v_in_the_sampler_order():
    feats = torch.arange(3 * 5, dtype=torch.float32).view(3, 5, 1).expand(3, 5, 2)  # [V=3, N=5, D=2]
    items = [type("Item", (), {"label": i % 2})() for i in range(5)]
    sampler = EpochSampler(5, seed=1)
    loader = CachedFeatureLoader(items, lambda: feats, sampler, batch_size=2, drop_last=True)
    assert len(loader) == 2
    for epoch in range(5):
        sampler.set_epoch(epoch)
        batches = list(loader)
        order = sampler.order()
        idx = torch.cat([b["index"] for b in batches])
        assert idx.tolist() == order[:4]
        got = torch.cat([b["feat"][:, 0] for b in batches])
        assert got.tolist() == [float((epoch % 3) * 5 + i) for i in order[:4]]
        assert torch.cat([b["label"] for b in batches]).tolist() == [i % 2 for i in order[:4]]


def test_store_encodes_only_missing_rows(tmp_path):
    data = make_image_folder(tmp_path / "d", classes=("a", "b"), per_class=3)
    from engine.data.datasets import Datum

    items = [Datum(impath=os.path.join(data, c, f"{i}.jpg"), label=j) for j, c in enumerate("ab") for i in range(3)]
    cfg = get_cfg_default()
    cfg.INPUT.SIZE = (8, 8)
    tfm = build_transform(cfg, False)
    calls = []

    def encode(images):
        calls.append(images.shape[0])
        return images.mean(dim=(2, 3))

    store = FeatureStore(str(tmp_path / "cache"))
    first = store.features(encode, items, tfm, "enc", "tfm", "x/test", ["test"], is_train=False, dtype=torch.float32)
    assert first.shape == (1, 6, 3) and store.encoded == 6
    second = store.features(encode, items[:4], tfm, "enc", "tfm", "x/test", ["test"], is_train=False, dtype=torch.float32)
    assert store.encoded == 6 and sum(calls) == 6
    torch.testing.assert_close(second[0], first[0, :4])
    off = FeatureStore(str(tmp_path / "off"), enabled=False)
    off.features(encode, items, tfm, "enc", "tfm", "x/test", ["test"], is_train=False, dtype=torch.float32)
    assert off.encoded == 6 and not os.path.exists(tmp_path / "off")


def _docstring_example():
    """The method written in FrozenCLIPTrainer's docstring, executed as it stands there."""
    import inspect
    import textwrap

    import torch.nn as nn
    import torch.nn.functional as F

    from engine.metrics import compute_accuracy
    from engine.registry import Registry
    from trainers import clip_trainer
    from trainers.text_features import prompt_features

    doc = inspect.getdoc(clip_trainer.FrozenCLIPTrainer)
    block = doc.split("Adding a method that trains on cached features")[1].split("::\n", 1)[1]
    code = textwrap.dedent(block.split("\n\nwith its config group")[0])
    namespace = dict(nn=nn, F=F, compute_accuracy=compute_accuracy, prompt_features=prompt_features,
                     TRAINER_REGISTRY=Registry("EXAMPLE"), FrozenCLIPTrainer=clip_trainer.FrozenCLIPTrainer,
                     cosine_logits=clip_trainer.cosine_logits)
    exec(compile(code, "FrozenCLIPTrainer docstring", "exec"), namespace)
    return namespace["RowTuning"], len(code.strip().splitlines())


def test_the_base_class_example_method_trains_on_cached_features_and_end_to_end(setup):
    """A new method is a head + a step: the docstring's example trains, checkpoints, and its cached
    run (V = epochs) equals its end-to-end run, as TaskRes' does."""
    from yacs.config import CfgNode as CN

    import datasets  # noqa: F401  (registers ImageFolder)
    import trainers
    from engine.config import get_cfg_default, merge_from_file

    method, lines = _docstring_example()
    assert lines <= 35  # "a method is ~30 lines"
    data, cfg_file, tmp = setup
    weights = {}
    for mode, opts in (("cached", ["FEATURE_CACHE.TRAIN_VIEWS", EPOCHS]), ("e2e", ["FEATURE_CACHE.ENABLED", False])):
        cfg = trainers.extend_cfg(get_cfg_default())
        cfg.TRAINER.RowTuning = CN()
        cfg.TRAINER.RowTuning.PREC = "fp32"
        merge_from_file(cfg, cfg_file)
        cfg.merge_from_list(["TRAINER.NAME", "RowTuning", "DATASET.ROOT", data, "OUTPUT_DIR", str(tmp / mode),
                             "SEED", 1, "DATASET.NUM_SHOTS", 4, *opts])
        trainer = method(cfg)
        zero_shot = trainer.model.weight.detach().clone()
        trainer.train()
        assert (tmp / mode / "head" / f"model.pth.tar-{EPOCHS}").exists()
        weights[mode] = trainer.model.weight.detach().clone()
        assert (weights[mode] - zero_shot).abs().max() > 1e-4  # it trained
    assert trainer.feature_store is None
    torch.testing.assert_close(weights["cached"], weights["e2e"], rtol=1e-4, atol=1e-6)


def test_moving_the_data_folder_changes_no_number_and_keeps_the_cache(setup):
    """Views are seeded by the path relative to DATASET.ROOT and cache rows keyed by it."""
    data, cfg, tmp = setup
    first, out = train(setup, "before")
    moved = str(tmp / "elsewhere" / "data")
    os.makedirs(os.path.dirname(moved))
    os.rename(data, moved)  # mtimes survive a move
    again, out2 = train((moved, cfg, tmp), "after")
    assert again.feature_store.encoded == 0
    assert torch.equal(residual(again), residual(first))
    e2e_a, _ = train((moved, cfg, tmp), "e2e_moved", "FEATURE_CACHE.ENABLED", False)
    os.rename(moved, data)
    e2e_b, _ = train(setup, "e2e_back", "FEATURE_CACHE.ENABLED", False)
    assert torch.equal(residual(e2e_a), residual(e2e_b))


def test_seeds_get_different_augmentations_and_a_view_is_fixed_by_seed_path_view(tmp_path):
    from engine.data.datasets import Datum

    data = make_image_folder(tmp_path / "d", classes=("a",), per_class=1)
    item = Datum(os.path.join(data, "a", "0.jpg"), 0)
    cfg = get_cfg_default()
    cfg.INPUT.SIZE = (16, 16)
    cfg.INPUT.TRANSFORMS = ["random_resized_crop", "random_flip"]
    tfm = build_transform(cfg, True)

    def view(seed, v, root=data):
        return DatasetWrapper([item], tfm, True, root=root, seed=seed)[(0, v)]["img"]

    assert torch.equal(view(1, 0), view(1, 0))  # repeatable
    assert not torch.equal(view(1, 0), view(2, 0))  # another seed, another crop
    assert not torch.equal(view(1, 0), view(1, 1))  # another view, another crop
    assert view_seed(item.impath, 3, 1, data) == view_seed("/elsewhere/a/0.jpg", 3, 1, "/elsewhere")
    assert view_seed(item.impath, 3, -1, data) == view_seed(item.impath, 3, 0, data)  # unseeded runs use 0


def test_encoding_progress_is_written_to_log_txt(setup):
    _, out = train(setup, "run")
    log = (out / "log.txt").read_text()
    assert f"Encoding ImageFolder/train: {4 * N_TRAIN}/{4 * N_TRAIN} image views (100%)" in log
    assert f"Encoding ImageFolder/test: {N_TEST}/{N_TEST} image views (100%)" in log


def test_one_and_two_torch_threads_give_the_same_run(setup, monkeypatch):
    """Reproducibility across machines: the thread count (a machine's core count by default) is
    what most often changes float summation order. One cached TaskRes run with 1 and with 2
    threads, each with its own cache (so encoding runs under each count too).

    The encoder runs under FEATURE_CACHE.ENCODE_THREADS (1) whatever NUM_THREADS is, so the features
    are bit-identical on any CPU (on an AMD EPYC, encoding under 2 threads moved them by 2.4e-7).
    The loop's small matrices run under NUM_THREADS: README states the tolerance, 1e-6 of the
    residual's size, and equal accuracy."""
    from trainers.clip_trainer import FrozenCLIPTrainer

    encode = FrozenCLIPTrainer.encode_images
    seen = []

    def encode_images(self, images):
        seen.append(torch.get_num_threads())
        return encode(self, images)

    monkeypatch.setattr(FrozenCLIPTrainer, "encode_images", encode_images)
    data, cfg, tmp = setup
    runs = {}
    for threads in (1, 2):
        seen.clear()
        os.environ["TASKRES_FEATURE_CACHE"] = str(tmp / f"cache{threads}")
        trainer, out = train(setup, f"threads{threads}", "FEATURE_CACHE.NUM_THREADS", threads,
                             "OPTIM.MAX_EPOCH", 10, "OPTIM.LR", 0.05)
        assert torch.get_num_threads() == threads and f"torch CPU threads: {threads}" in (out / "log.txt").read_text()
        assert seen and set(seen) == {1}  # every encoder call ran on one thread
        runs[threads] = (residual(trainer), accuracies(out / "log.txt")[-1],
                         trainer.feature_source.features("test"), trainer.feature_source.features("train"))
    torch.set_num_threads(1)
    assert runs[1][0].abs().max() > 1e-3  # it trained
    torch.testing.assert_close(runs[2][2], runs[1][2], rtol=0, atol=0)  # test features: bit-identical
    torch.testing.assert_close(runs[2][3], runs[1][3], rtol=0, atol=0)  # training views too
    scale = runs[1][0].abs().max().item()
    torch.testing.assert_close(runs[2][0], runs[1][0], rtol=0, atol=1e-6 * scale)
    assert runs[2][1] == runs[1][1]


def test_encode_threads_other_than_one_are_part_of_the_cache_key(setup):
    one, _ = train(setup, "one", "OPTIM.MAX_EPOCH", 1)
    again, _ = train(setup, "again", "OPTIM.MAX_EPOCH", 1)
    two, _ = train(setup, "two", "OPTIM.MAX_EPOCH", 1, "FEATURE_CACHE.ENCODE_THREADS", 2)
    assert again.feature_store.encoded == 0  # same count: read back
    assert two.feature_store.encoded == one.feature_store.encoded > 0  # another count: its own entries
    assert torch.get_num_threads() == 1  # the loop's count came back after encoding


def test_each_training_image_is_decoded_once_and_its_views_are_the_same_bit_for_bit(tmp_path, monkeypatch):
    import engine.features as features_module
    from engine.data.datasets import Datum

    data = make_image_folder(tmp_path / "d", classes=("a", "b"), per_class=3)
    items = [Datum(os.path.join(data, c, f"{i}.jpg"), j) for j, c in enumerate("ab") for i in range(3)]
    cfg = get_cfg_default()
    cfg.INPUT.SIZE = (16, 16)
    cfg.INPUT.TRANSFORMS = ["random_resized_crop", "random_flip", "normalize"]
    tfm = build_transform(cfg, True)
    keys = [(i, v) for v in (0, 1, 2) for i in range(6)][1:]  # views in the store's order, one pair missing
    decoded = []
    real_read = features_module.read_image
    monkeypatch.setattr(features_module, "read_image", lambda path: decoded.append(path) or real_read(path))
    got = features_module.encode_views(lambda x: x.flatten(1), items, tfm, keys, batch_size=4, num_workers=0,
                                       device="cpu", is_train=True, root=data, seed=7)
    assert sorted(decoded) == sorted(item.impath for item in items)  # 6 decodes for 17 views
    worker, to_input = split_transform(tfm)
    wrapper = DatasetWrapper(items, worker, True, root=data, seed=7)  # the end-to-end loop's views
    expected = torch.cat([to_input(wrapper[key]["img"][None]).flatten(1) for key in keys])
    assert torch.equal(got, expected)


def test_a_subclass_with_its_own_build_model_still_gets_the_cache(setup):
    """Trainers written before build_head (load_clip(), head, use_feature_cache()) keep working."""
    from yacs.config import CfgNode as CN

    import datasets  # noqa: F401  (registers ImageFolder)
    import trainers
    from engine.config import get_cfg_default, merge_from_file

    method, _ = _docstring_example()

    class OldStyle(method):
        def build_model(self):
            clip_model = self.load_clip()
            self.model = self.build_head(clip_model).to(self.device)
            self.register_trainable()
            self.use_feature_cache()

    data, cfg_file, tmp = setup
    cfg = trainers.extend_cfg(get_cfg_default())
    cfg.TRAINER.RowTuning = CN()
    cfg.TRAINER.RowTuning.PREC = "fp32"
    merge_from_file(cfg, cfg_file)
    cfg.merge_from_list(["TRAINER.NAME", "RowTuning", "DATASET.ROOT", data, "OUTPUT_DIR", str(tmp / "old"),
                         "SEED", 1, "DATASET.NUM_SHOTS", 4])
    trainer = OldStyle(cfg)
    trainer.train()
    assert trainer.feature_store.encoded == 4 * N_TRAIN + N_TEST
    assert (tmp / "old" / "head" / f"model.pth.tar-{EPOCHS}").exists()


def test_feature_source_serves_any_split_and_view_from_the_loaders_bundles(setup):
    first, _ = train(setup, "run", "FEATURE_CACHE.TRAIN_VIEWS", 2)
    source, store = first.feature_source, first.feature_store
    encoded = store.encoded
    train_feats = source.features("train")
    assert train_feats.shape[:2] == (2, N_TRAIN) and store.encoded == encoded  # the loader's rows, read back
    torch.testing.assert_close(train_feats, first.train_loader_x.all_features().cpu(), rtol=0, atol=0)
    subset = source.features("train", [1], items=first.dm.dataset.train_x[:3])
    torch.testing.assert_close(subset[0], train_feats[1, :3], rtol=0, atol=0)
    plain = source.features("train", ["test"])  # un-augmented training images: encoded once, then stored
    assert plain.shape[:2] == (1, N_TRAIN) and store.encoded == encoded + N_TRAIN
    assert source.features("test").shape[:2] == (1, N_TEST) and store.encoded == encoded + N_TRAIN
