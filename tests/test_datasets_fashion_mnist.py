"""FashionMNIST on the real idx files of Debian's dataset-fashion-mnist package (skipped when absent)."""
import os

import numpy as np
import pytest
from PIL import Image

import datasets  # noqa: F401
from datasets import fashion_mnist as fm
from engine.config import get_cfg_default
from engine.data.datasets import build_dataset
from engine.errors import DataError

needs_debian = pytest.mark.skipif(
    not os.path.exists(os.path.join(fm.DEBIAN_DIR, "train-images-idx3-ubyte.gz")),
    reason="needs `apt-get install dataset-fashion-mnist`")


def make_cfg(root, num_shots=4, seed=1, test_subset=5):
    cfg = get_cfg_default()
    cfg.DATASET.NAME = "FashionMNIST"
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NUM_SHOTS = num_shots
    cfg.DATASET.TEST_SUBSET = test_subset
    cfg.SEED = seed
    return cfg


@needs_debian
def test_official_files_give_10_classes_and_80_20_trainval(tmp_path):
    ds = fm.FashionMNIST.__new__(fm.FashionMNIST)  # the split logic without writing 70k PNGs
    ds.image_dir = str(tmp_path)
    ds.source_dir = fm.find_source_dir(str(tmp_path))
    assert ds.source_dir == fm.DEBIAN_DIR
    images, labels = ds.read_split("train")
    assert images.shape == (60000, 28, 28) and labels.shape == (60000,)
    train, val = fm.split_trainval(ds.make_items("train", labels), p_val=0.2)
    assert (len(train), len(val)) == (48000, 12000)
    assert np.bincount([d.label for d in val]).tolist() == [1200] * 10
    assert ds.read_split("test")[0].shape == (10000, 28, 28)


@needs_debian
def test_fewshot_demo_writes_only_needed_pngs_matching_the_idx_data(tmp_path):
    ds = build_dataset(make_cfg(tmp_path))
    assert ds.classnames == fm.CLASSNAMES and ds.num_classes == 10
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (40, 40, 50)
    assert np.bincount([d.label for d in ds.test]).tolist() == [5] * 10
    pngs = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "fashion_mnist" / "images") for f in fs]
    assert len(pngs) == 40 + 40 + 50
    images = fm.read_idx(os.path.join(fm.DEBIAN_DIR, "t10k-images-idx3-ubyte.gz"), 2051)
    item = ds.test[0]
    index = int(os.path.basename(item.impath)[:-4])
    assert np.array_equal(np.array(Image.open(item.impath)), images[index])
    labels = fm.read_idx(os.path.join(fm.DEBIAN_DIR, "t10k-labels-idx1-ubyte.gz"), 2049)
    assert item.label == labels[index] == 9  # the official first test image is an ankle boot
    assert item.impath == str(tmp_path / "fashion_mnist" / "images" / "test" / "9_ankle_boot" / "00000.png")

    mtimes = {p: os.stat(p).st_mtime_ns for p in pngs}
    again = build_dataset(make_cfg(tmp_path))
    assert [d.impath for d in again.train_x] == [d.impath for d in ds.train_x]  # same seed, same sample
    assert {p: os.stat(p).st_mtime_ns for p in pngs} == mtimes  # written once
    other = build_dataset(make_cfg(tmp_path, seed=2))
    assert [d.impath for d in other.train_x] != [d.impath for d in ds.train_x]


def test_given_folder_wins_over_debian(tmp_path):
    from dataset_replicas import build_replica

    root = build_replica("FashionMNIST", tmp_path)
    ds = build_dataset(make_cfg(root, num_shots=-1, test_subset=-1))
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (80, 20, 30)


def test_missing_files_say_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(fm, "DEBIAN_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        build_dataset(make_cfg(tmp_path))


def test_corrupt_idx_file_is_named(tmp_path, monkeypatch):
    from dataset_replicas import build_replica

    root = build_replica("FashionMNIST", tmp_path)
    bad = os.path.join(root, "fashion_mnist", "t10k-labels-idx1-ubyte.gz")
    with open(bad, "wb") as f:
        f.write(b"garbage")
    monkeypatch.setattr(fm, "DEBIAN_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz is not a readable idx file"):
        build_dataset(make_cfg(root))


def test_label_beyond_the_ten_classes_is_named(tmp_path, monkeypatch):
    from dataset_replicas import build_replica, write_idx

    root = build_replica("FashionMNIST", tmp_path)
    labels = np.tile(np.arange(10), 3)  # the replica's 30 test labels, the last one out of range
    labels[-1] = 11
    write_idx(os.path.join(root, "fashion_mnist", "t10k-labels-idx1-ubyte.gz"), labels)
    monkeypatch.setattr(fm, "DEBIAN_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte in .* holds label 11, beyond the 10 classes"):
        build_dataset(make_cfg(root))
