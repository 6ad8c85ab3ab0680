"""Every stored artefact carries a checksum checked on read; a changed byte is never used silently.

- a checkpoint (ours: sealed; Dassl's: zip CRCs) with one byte changed is refused, naming the file;
- a feature-cache bundle or a few-shot draw that fails its check is moved aside and remade;
- a published split file (no checksum possible) is checked for consistency: a flipped label is named;
- an enhanced base records the CLIP weights it was made from; TaskRes refuses a base made from others.
"""
import json
import logging
import os
import shutil
import zipfile

import pytest
import torch

from clip_fixtures import save_tiny_clip
from engine.errors import CheckpointError, DataError
from helpers import accuracies, copy_run, make_image_folder, run_train, tiny_clip, write_tiny_config


def record_offset(path, member_suffix):
    """Byte offset in ``path`` where the data of the zip record ending in ``member_suffix`` starts."""
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(member_suffix))
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
    name_len, extra_len = int.from_bytes(header[26:28], "little"), int.from_bytes(header[28:30], "little")
    return info.header_offset + 30 + name_len + extra_len


def flip_byte(path, member_suffix="data/0", at=5):
    """Change one byte inside a tensor's data (as a bad disk or a bad copy would)."""
    offset = record_offset(path, member_suffix) + at
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x10]))


def rewrite_record(path, member_suffix, change):
    """Rewrite one record's bytes with a correct CRC (a deliberate edit, not damage)."""
    tmp = path + ".new"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            dst.writestr(info, change(data) if info.filename.endswith(member_suffix) else data)
    os.replace(tmp, path)


# ---- the seal itself -------------------------------------------------------------------------
def test_sealed_file_loads_with_plain_torch_load_and_detects_changes(tmp_path):
    from engine.utils.integrity import IntegrityError, check_torch_bytes
    from engine.utils.io import atomic_torch_save

    path = str(tmp_path / "x.pt")
    state = {"state_dict": {"w": torch.arange(8.0)}, "epoch": 3}
    atomic_torch_save(state, path)
    loaded = torch.load(path, weights_only=True)  # what Dassl and the original TaskRes call
    assert loaded["epoch"] == 3 and torch.equal(loaded["state_dict"]["w"], state["state_dict"]["w"])
    assert check_torch_bytes(open(path, "rb").read()) == "sealed"
    # a CRC-consistent edit of the tensor data: only the stored sha256 can tell
    rewrite_record(path, "data/0", lambda b: b[:4] + bytes([b[4] ^ 1]) + b[5:])
    with pytest.raises(IntegrityError, match="content sha256 is .*, not the .* stored with it"):
        check_torch_bytes(open(path, "rb").read())
    # Dassl's files: no seal, the CRCs are checked
    plain = str(tmp_path / "plain.pt")
    torch.save(state, plain)
    assert check_torch_bytes(open(plain, "rb").read()) == "crc only"
    flip_byte(plain)
    with pytest.raises(IntegrityError, match="Bad CRC-32"):
        check_torch_bytes(open(plain, "rb").read())


# ---- checkpoints -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("integrity")
    data = make_image_folder(tmp / "data")
    cfg = write_tiny_config(tmp / "cfg.yaml", tiny_clip(tmp), epochs=3, batch=4)
    os.environ["TASKRES_FEATURE_CACHE"] = str(tmp / "cache")
    out = tmp / "run"
    run_train(*taskres(data, cfg, out))
    return {"data": data, "cfg": cfg, "out": out, "tmp": tmp, "accuracy": accuracies(out / "log.txt")[-1]}


def taskres(data, cfg, out, *extra):
    return ["--root", data, "--seed", 1, "--trainer", "TaskRes", "--config-file", cfg, "--output-dir", out,
            *extra, "DATASET.NUM_SHOTS", 4]


def files_of(folder):
    return {os.path.relpath(os.path.join(d, n), folder): open(os.path.join(d, n), "rb").read()
            for d, _, names in os.walk(folder) for n in names if n not in ("log.txt", ".run.lock")}


@pytest.mark.parametrize("sealed", [True, False], ids=["ours", "dassl"])
def test_one_flipped_byte_in_a_checkpoint_is_refused_not_evaluated(run, tmp_path, sealed):
    out = tmp_path / "run"
    copy_run(run["out"], out)
    ckpt = out / "prompt_learner" / "model.pth.tar-3"
    if not sealed:  # as Dassl writes it: plain torch.save
        torch.save(torch.load(ckpt, weights_only=False), ckpt)
    flip_byte(str(ckpt))
    before = files_of(out)
    with pytest.raises(CheckpointError, match=f"Checkpoint {ckpt} fails its checksum .*Bad CRC-32.*: it changed "
                                              "after it was written; delete it"):
        run_train(*taskres(run["data"], run["cfg"], tmp_path / "eval", "--eval-only", "--model-dir", out,
                           "--load-epoch", 3))
    with pytest.raises(CheckpointError, match=f"Checkpoint {ckpt} fails its checksum"):  # resuming: never re-trained over
        run_train(*taskres(run["data"], run["cfg"], out))
    assert files_of(out) == before


def test_a_dassl_checkpoint_without_our_checksum_still_loads(run, tmp_path, caplog):
    out = tmp_path / "run"
    copy_run(run["out"], out)
    for name in ("model.pth.tar-3", "model-best.pth.tar"):
        path = out / "prompt_learner" / name
        if path.exists():
            torch.save(torch.load(path, weights_only=False), path)
    with caplog.at_level(logging.INFO):
        run_train(*taskres(run["data"], run["cfg"], tmp_path / "eval", "--eval-only", "--model-dir", out,
                           "--load-epoch", 3))
    assert accuracies(tmp_path / "eval" / "log.txt") == [run["accuracy"]]
    assert "has no checksum of ours (written by Dassl or downloaded): its zip CRCs are correct" in caplog.text


def test_checkpoints_and_bundles_we_write_are_sealed(run):
    from engine.utils.integrity import check_torch_bytes

    names = [os.path.join(d, n) for d, _, files in os.walk(run["out"]) for n in files if "pth.tar" in n]
    names += [os.path.join(d, n) for d, _, files in os.walk(run["tmp"] / "cache") for n in files if n.endswith(".pt")]
    assert len(names) >= 3
    for path in names:
        assert check_torch_bytes(open(path, "rb").read()) == "sealed", path


# ---- feature-cache bundles -------------------------------------------------------------------
def test_flipped_byte_in_a_cache_bundle_is_moved_aside_and_re_encoded(tmp_path, caplog):
    from torchvision import transforms as T

    from engine.data.datasets import Datum
    from engine.features import FeatureStore

    folder = make_image_folder(tmp_path / "imgs", classes=("a",), per_class=3)
    items = [Datum(os.path.join(folder, "a", f"{i}.jpg"), 0) for i in range(3)]
    calls = []

    def encode(images):
        calls.append(images.shape[0])
        return images.flatten(1)[:, :5] * 2

    tfm = T.Compose([T.Resize(8), T.CenterCrop(8), T.ToTensor()])
    store = FeatureStore(str(tmp_path / "cache"))

    def features():
        return store.features(encode, items, tfm, "enc", "tfm", "g/test", ["test"], is_train=False, dtype=torch.float32)

    first = features()
    path = store.bundle_path("enc", "tfm", "test", "g/test")
    flip_byte(path, "data/0", at=2)  # inside the feature tensor (the keys are in data.pkl)
    damaged = open(path, "rb").read()
    with caplog.at_level(logging.WARNING, logger="engine.features"):
        again = features()
    assert f"Feature cache file {path} is corrupt (IntegrityError: Bad CRC-32" in caplog.text
    assert f"moved it to {path}.corrupt and rebuilding it" in caplog.text
    assert open(path + ".corrupt", "rb").read() == damaged  # kept, not deleted
    assert torch.equal(first, again) and sum(calls) == 6  # encoded again: the right values, not the changed ones
    assert torch.equal(features(), first) and sum(calls) == 6  # the remade bundle is read back


# ---- few-shot draws --------------------------------------------------------------------------
def _fewshot_cfg(root, shots=2):
    import trainers
    from engine.config import get_cfg_default

    cfg = trainers.extend_cfg(get_cfg_default())
    cfg.DATASET.NAME = "ImageFolder"
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NUM_SHOTS = shots
    cfg.SEED = 1
    return cfg


@pytest.mark.parametrize("legacy", [False, True], ids=["sealed", "without-checksum"])
def test_a_flipped_label_in_a_few_shot_draw_is_named_and_drawn_again(tmp_path, caplog, legacy):
    import datasets  # noqa: F401  (registers ImageFolder)
    from engine.data.datasets import build_dataset

    root = make_image_folder(tmp_path / "data")
    first = build_dataset(_fewshot_cfg(root)).train_x
    path = os.path.join(root, "split_fewshot", "shot_2-seed_1.json")
    payload = json.load(open(path))
    if not legacy:
        from engine.utils.integrity import json_digest

        assert payload["sha256"] == json_digest(payload)
    payload["train"][0][1] = (payload["train"][0][1] + 1) % 3  # one label flipped
    if legacy:  # a draw of an older version of this code: no checksum, the split itself is the check
        payload.pop("sha256", None)
    with open(path, "w") as f:
        json.dump(payload, f)
    with caplog.at_level(logging.WARNING):
        again = build_dataset(_fewshot_cfg(root)).train_x
    row = payload["train"][0]
    reason = (f'its "train" entry 0 {row} is not an entry of the split' if legacy
              else "it fails its checksum: it changed after it was drawn")
    assert f"Few-shot cache {path} is corrupt ({reason})" in caplog.text
    assert f"moved it to {path}.corrupt and drawing it again" in caplog.text
    assert json.load(open(path + ".corrupt")) == payload  # kept
    assert [(d.impath, d.label) for d in again] == [(d.impath, d.label) for d in first]  # the seeded draw again


def test_a_flipped_label_in_a_published_split_file_is_named(tmp_path):
    import datasets  # noqa: F401
    from engine.data.datasets import build_dataset

    root = make_image_folder(tmp_path / "data")
    build_dataset(_fewshot_cfg(root))
    split = os.path.join(root, "split_ImageFolder.json")
    payload = json.load(open(split))
    row = payload["test"][2]
    row[1] = (row[1] + 1) % 3
    with open(split, "w") as f:
        json.dump(payload, f)
    shutil.rmtree(os.path.join(root, "split_fewshot"))
    with pytest.raises(DataError) as info:
        build_dataset(_fewshot_cfg(root))
    message = str(info.value)
    assert message.startswith(f'ImageFolder: split file {split} has "test" entry 2 [{row[0]!r}, {row[1]}, '
                              f"{row[2]!r}], but ")
    assert f"other entries give label {row[1]} the class name" in message
    assert message.endswith("fix the entry or re-download the file.") and "\n" not in message


# ---- enhanced bases: made from which weights ---------------------------------------------------
def strong_base(data, cfg, out, root):
    return ["--root", data, "--seed", 1, "--trainer", "StrongBase", "--config-file", cfg, "--output-dir", out,
            "DATASET.NUM_SHOTS", 4, "OPTIM.MAX_EPOCH", 1, "STRONG_BASE.ROOT", root]


def test_an_enhanced_base_made_from_other_weights_is_refused(tmp_path, caplog, monkeypatch):
    from trainers.strong_base import strong_base_path

    WEIGHTS_RECORD = "clip_weights"

    monkeypatch.setenv("TASKRES_FEATURE_CACHE", str(tmp_path / "cache"))
    data = make_image_folder(tmp_path / "data")
    weights = str(tmp_path / "clip.pt")
    save_tiny_clip(weights, vision="vit", seed=0)
    cfg = write_tiny_config(tmp_path / "cfg.yaml", weights, epochs=1, batch=4)
    roots = str(tmp_path / "sb")
    run_train(*strong_base(data, cfg, tmp_path / "sb_run", roots))
    base = strong_base_path(roots, "ImageFolder", weights, 4)
    made = torch.load(base, weights_only=False)
    assert set(made) == {"state_dict", "epoch", "optimizer", "scheduler", "val_result", WEIGHTS_RECORD}
    # the same weights: used
    run_train("--enhanced-base", base, *taskres(data, cfg, tmp_path / "same", "OPTIM.MAX_EPOCH", 1))
    # the same file copied elsewhere (another identity, same sha256): used
    copy = str(tmp_path / "copy" / "clip.pt")
    os.makedirs(os.path.dirname(copy))
    shutil.copy(weights, copy)
    cfg_copy = write_tiny_config(tmp_path / "cfg_copy.yaml", copy, epochs=1, batch=4)
    run_train("--enhanced-base", base, *taskres(data, cfg_copy, tmp_path / "copied", "OPTIM.MAX_EPOCH", 1))
    # other weights under the same file name: refused, nothing trained
    save_tiny_clip(weights, vision="vit", seed=1)
    with pytest.raises(CheckpointError) as info:
        run_train("--enhanced-base", base, *taskres(data, cfg, tmp_path / "other", "OPTIM.MAX_EPOCH", 1))
    message = str(info.value)
    assert message.startswith(f"Enhanced base {base} was made from the CLIP weights {made[WEIGHTS_RECORD]['identity']}")
    assert f"but this run uses {os.path.abspath(weights)}|" in message
    assert message.endswith("delete it and rebuild it with scripts/taskres/strong_base.sh for these weights "
                            "(or pass --enhanced-base none).")
    assert not (tmp_path / "other" / "prompt_learner").exists()
    # a downloaded original (no record): used, with a warning
    del made[WEIGHTS_RECORD]
    torch.save(made, base)
    with caplog.at_level(logging.WARNING):
        run_train("--enhanced-base", base, *taskres(data, cfg, tmp_path / "downloaded", "OPTIM.MAX_EPOCH", 1))
    assert f"Enhanced base {base} does not record the CLIP weights it was made from" in caplog.text


def test_the_same_content_gives_the_same_bytes(tmp_path):
    """The seal adds no timestamp: two caches built apart (or two processes) compare byte for byte."""
    import time

    from engine.utils.io import atomic_torch_save

    state = {"keys": ["a"], "features": torch.ones(1, 4)}
    atomic_torch_save(state, str(tmp_path / "one.pt"))
    time.sleep(2.1)  # zip timestamps have 2-second resolution
    atomic_torch_save(state, str(tmp_path / "two.pt"))
    assert (tmp_path / "one.pt").read_bytes() == (tmp_path / "two.pt").read_bytes()
