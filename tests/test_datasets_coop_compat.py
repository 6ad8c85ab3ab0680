"""A data folder prepared by CoOp/TaskRes is read as it is: ImageNet's listing order (hence its few-shot
draw) equals CoOp's on the same folder, and CoOp's pickles (``imagenet/preprocessed.pkl``,
``split_fewshot/shot_K-seed_S.pkl``) are reused through an unpickler that admits only Dassl's Datum."""
import os
import pickle
import random
import sys
import types

import pytest

import datasets  # noqa: F401  (registers every dataset)
from dataset_replicas import build_replica
from engine.config import get_cfg_default
from engine.data.datasets import build_dataset
from engine.errors import DataError


def load(name, root, num_shots=-1, seed=1):
    cfg = get_cfg_default()
    cfg.DATASET.NAME = name
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NUM_SHOTS = num_shots
    cfg.SEED = seed
    return build_dataset(cfg)


def paths(items):
    return [d.impath for d in items]


# ------------------------------------------------------------------ CoOp's ImageNet procedure, written out

def coop_imagenet_train(image_dir):
    """CoOp's ``ImageNet.read_data``: class folders sorted (scandir), images in Dassl's
    ``listdir_nohidden`` order (``os.listdir``, hidden names dropped, not sorted)."""
    folders = sorted(f.name for f in os.scandir(image_dir) if f.is_dir())
    items = []
    for label, folder in enumerate(folders):
        for name in [n for n in os.listdir(os.path.join(image_dir, folder)) if not n.startswith(".")]:
            items.append((os.path.join(image_dir, folder, name), label))
    return items


def dassl_fewshot(items, k, seed):
    """``random.seed(seed)`` (CoOp's train.py) then Dassl's ``generate_fewshot_dataset``: labels in first
    appearance order, ``random.sample(items, k)`` each (all items when fewer)."""
    random.seed(seed)
    by_label = {}
    for item in items:
        by_label.setdefault(item[1], []).append(item)
    out = []
    for group in by_label.values():
        out.extend(random.sample(group, k) if len(group) >= k else group)
    return [p for p, _ in out]


@pytest.fixture
def scrambled_listdir(monkeypatch):
    """``os.listdir`` returning image folders in a fixed non-sorted order, the same on every filesystem
    (ext4, tmpfs, ... each have their own order; this makes the test independent of the one it runs on)."""
    real = os.listdir

    def listdir(path="."):
        names = real(path)
        if any(n.lower().endswith(".jpeg") for n in names):
            names = sorted(names, key=lambda n: n[::-1])[::-1]  # reversed, keyed on the reversed name
        return names

    monkeypatch.setattr(os, "listdir", listdir)


def test_imagenet_lists_images_in_os_listdir_order_and_draws_as_coop(tmp_path, scrambled_listdir):
    root = build_replica("ImageNet", tmp_path / "data")
    image_dir = os.path.join(root, "imagenet", "images", "train")
    original = coop_imagenet_train(image_dir)
    assert paths(load("ImageNet", root).train_x) == [p for p, _ in original]
    sorted_order = sorted(original, key=lambda item: (item[1], item[0]))
    differs = 0
    for seed in (1, 2, 3):
        ours = paths(load("ImageNet", root, num_shots=1, seed=seed).train_x)
        assert ours == dassl_fewshot(original, 1, seed), f"seed {seed}"
        differs += ours != dassl_fewshot(sorted_order, 1, seed)
    assert differs == 3  # with sorted listings (the old behaviour) every seed would pick other images


def test_imagenet_draw_equals_coops_on_this_filesystem(tmp_path):
    root = build_replica("ImageNet", tmp_path / "data")
    original = coop_imagenet_train(os.path.join(root, "imagenet", "images", "train"))
    for seed in (1, 2, 3):
        assert paths(load("ImageNet", root, num_shots=1, seed=seed).train_x) == dassl_fewshot(original, 1, seed)


# ------------------------------------------------------------------ CoOp's pickles

class FakeDassl:
    """A stand-in ``dassl.data.datasets.base_dataset`` whose Datum pickles as CoOp's does. Its modules are in
    ``sys.modules`` only while `dump` writes a pickle, so loading can not rely on them."""

    NAMES = ["dassl", "dassl.data", "dassl.data.datasets", "dassl.data.datasets.base_dataset"]

    def __init__(self):
        class Datum:  # Dassl's: four private attributes set in __init__
            def __init__(self, impath="", label=0, domain=0, classname=""):
                self._impath, self._label, self._domain, self._classname = impath, label, domain, classname

        Datum.__module__ = self.NAMES[-1]
        Datum.__qualname__ = "Datum"
        self.Datum = Datum
        self.modules = {n: types.ModuleType(n) for n in self.NAMES}
        self.modules[self.NAMES[-1]].Datum = Datum

    def dump(self, path, obj, protocol=pickle.HIGHEST_PROTOCOL):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        assert not any(n in sys.modules for n in self.NAMES)
        sys.modules.update(self.modules)
        try:
            with open(path, "wb") as f:
                pickle.dump(obj, f, protocol=protocol)
        finally:
            for n in self.NAMES:
                del sys.modules[n]


@pytest.fixture
def dassl():
    return FakeDassl()


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_coop_fewshot_pickle_is_reused_and_rebased_onto_the_root(tmp_path, dassl, protocol):
    root = build_replica("OxfordPets", tmp_path / "data")
    full = load("OxfordPets", root)
    dataset_dir = os.path.join(root, "oxford_pets")
    # the user's earlier sample: not what we would draw (last 2 of each class), written on another machine
    by_label = {}
    for d in full.train_x:
        by_label.setdefault(d.label, []).append(d)
    chosen = [d for group in by_label.values() for d in group[-2:]]
    chosen_val = [d for d in full.val if d.label < 2]

    def elsewhere(d):
        rel = os.path.relpath(d.impath, dataset_dir)
        return dassl.Datum("/home/someone/coop_data/oxford_pets/" + rel, d.label, 0, d.classname)

    pkl = os.path.join(dataset_dir, "split_fewshot", "shot_2-seed_1.pkl")
    payload = {"train": [elsewhere(d) for d in chosen], "val": [elsewhere(d) for d in chosen_val]}
    dassl.dump(pkl, payload, protocol)
    ds = load("OxfordPets", root, num_shots=2, seed=1)
    assert paths(ds.train_x) == paths(chosen)
    assert paths(ds.val) == paths(chosen_val)
    assert [(d.label, d.classname) for d in ds.train_x] == [(d.label, d.classname) for d in chosen]
    assert not os.path.exists(os.path.join(dataset_dir, "split_fewshot", "shot_2-seed_1.json"))
    # our own json cache for the same (K, seed) does not override the user's pickle
    os.remove(pkl)
    assert paths(load("OxfordPets", root, num_shots=2, seed=1).train_x) != paths(chosen)
    dassl.dump(pkl, payload, protocol)
    assert paths(load("OxfordPets", root, num_shots=2, seed=1).train_x) == paths(chosen)


def test_coop_imagenet_preprocessed_pickle_fixes_the_order_and_the_draw(tmp_path, dassl):
    root = build_replica("ImageNet", tmp_path / "data")
    image_dir = os.path.join(root, "imagenet", "images")
    recorded = {}
    for split in ("train", "val"):
        rows = []
        for label, wnid in enumerate(sorted(os.listdir(os.path.join(image_dir, split)))):
            names = sorted(os.listdir(os.path.join(image_dir, split, wnid)))[::-1]  # the order CoOp saw there
            rows += [(f"/mnt/old/imagenet/images/{split}/{wnid}/{n}", label, wnid) for n in names]
        recorded[split] = rows
    dassl.dump(os.path.join(root, "imagenet", "preprocessed.pkl"),
               {"train": [dassl.Datum(p, y, 0, c) for p, y, c in recorded["train"]],
                "test": [dassl.Datum(p, y, 0, c) for p, y, c in recorded["val"]]})
    os.remove(os.path.join(root, "imagenet", "classnames.txt"))  # CoOp does not read it when the pickle exists
    expected = [(p.replace("/mnt/old/imagenet", os.path.join(root, "imagenet")), y) for p, y, _ in recorded["train"]]
    full = load("ImageNet", root)
    assert paths(full.train_x) == [p for p, _ in expected]
    assert len(full.test) == len(recorded["val"]) and full.val == full.test
    for seed in (1, 2, 3):
        assert paths(load("ImageNet", root, num_shots=1, seed=seed).train_x) == dassl_fewshot(expected, 1, seed)


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("payload_kind", ["os.system", "eval", "nested"])
def test_a_pickle_with_anything_but_datum_is_refused_without_running(tmp_path, dassl, payload_kind):
    root = build_replica("OxfordPets", tmp_path / "data")
    marker = tmp_path / "ran"
    if payload_kind == "os.system":
        payload = {"train": [Evil(marker)], "val": []}
    elif payload_kind == "eval":
        payload = {"train": [], "val": [], "x": _Reduce(eval, (f"open({str(marker)!r}, 'w')",))}
    else:  # a real Datum carrying the payload in its state
        d = dassl.Datum("a.jpg", 0, 0, "cat")
        d._classname = Evil(marker)
        payload = {"train": [d], "val": []}
    pkl = os.path.join(root, "oxford_pets", "split_fewshot", "shot_2-seed_1.pkl")
    dassl.dump(pkl, payload)
    with pytest.raises(DataError) as e:
        load("OxfordPets", root, num_shots=2, seed=1)
    msg = str(e.value)
    assert pkl in msg and "refused without running it" in msg and "Dassl's Datum" in msg
    assert not marker.exists()


class _Reduce:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def test_truncated_pickle_and_unplaceable_paths_are_one_sentence(tmp_path, dassl):
    root = build_replica("OxfordPets", tmp_path / "data")
    pkl = os.path.join(root, "oxford_pets", "split_fewshot", "shot_2-seed_1.pkl")
    dassl.dump(pkl, {"train": [dassl.Datum("/x/oxford_pets/images/gone.jpg", 0, 0, "a")], "val": []})
    with open(pkl, "rb") as f:
        data = f.read()
    with open(pkl, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(DataError, match="is not a readable CoOp pickle"):
        load("OxfordPets", root, num_shots=2, seed=1)
    dassl.dump(pkl, {"train": [dassl.Datum("/x/oxford_pets/images/gone.jpg", 0, 0, "a")], "val": []})
    with pytest.raises(DataError, match=r"exist neither where it says .* nor under DATASET.ROOT"):
        load("OxfordPets", root, num_shots=2, seed=1)
    dassl.dump(pkl, {"train": [dassl.Datum("/x/pets/gone.jpg", 0, 0, "a")], "val": []})
    with pytest.raises(DataError, match="has no folder named 'oxford_pets'"):
        load("OxfordPets", root, num_shots=2, seed=1)
    dassl.dump(pkl, {"train": []})
    with pytest.raises(DataError, match='has no "val" list'):
        load("OxfordPets", root, num_shots=2, seed=1)
    dassl.dump(pkl, {"train": [dassl.Datum("/x/oxford_pets/images/a.jpg", 0, 0, ["not", "a", "name"])], "val": []})
    with pytest.raises(DataError, match="holds an item that is not a Dassl Datum"):
        load("OxfordPets", root, num_shots=2, seed=1)
    dassl.dump(pkl, [dassl.Datum("/x/oxford_pets/images/a.jpg", 0, 0, "a")])
    with pytest.raises(DataError, match="holds a list, not CoOp's dict of Datum lists"):
        load("OxfordPets", root, num_shots=2, seed=1)


def test_coop_imagenet_fewshot_pickle_holds_train_only(tmp_path, dassl):
    root = build_replica("ImageNet", tmp_path / "data")
    full = load("ImageNet", root)
    chosen = [d for d in full.train_x if d.impath.endswith("_3.JPEG")]  # one per class
    assert paths(chosen) != paths(load("ImageNet", root, num_shots=1, seed=2).train_x)  # also writes our json cache
    dassl.dump(os.path.join(root, "imagenet", "split_fewshot", "shot_1-seed_2.pkl"),
               {"train": [dassl.Datum(d.impath, d.label, 0, d.classname) for d in chosen]})
    ds = load("ImageNet", root, num_shots=1, seed=2)
    assert paths(ds.train_x) == paths(chosen)
    assert ds.val == ds.test == full.test
