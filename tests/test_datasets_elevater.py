"""ELEVATER datasets in vision_datasets' download layout (IRIS txt and COCO json indexes over zip archives):
labels and class names, MVLPT's few-shot sample and val split, extraction once, config files, clear errors."""
import glob
import json
import math
import os
import random

import pytest

import datasets  # noqa: F401  (registers every dataset)
from dataset_replicas import ELEVATER_CLASSES, elevater_coco, elevater_iris
from datasets.elevater import ELEVATER_DATASETS
from engine.config import get_cfg_default, merge_from_file
from engine.data.datasets import build_dataset
from engine.errors import DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(root, name="cifar-10", num_shots=-1, seed=1, subsample="all"):
    cfg = get_cfg_default()
    cfg.DATASET.NAME = "Elevater"
    cfg.DATASET.ELEVATER_NAME = name
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NUM_SHOTS = num_shots
    if num_shots == -1:  # the full train set (MVLPT's loader draws 20 shots by default)
        cfg.DATASET.NUM_SAMPLES_PER_CLASS = -1
    cfg.DATASET.SUBSAMPLE_CLASSES = subsample
    cfg.SEED = seed
    return build_dataset(cfg)


def index_rows(folder, index):
    """(member, label) of an IRIS index, read here independently of the dataset code."""
    rows = []
    with open(os.path.join(folder, index)) as f:
        for line in f:
            image, label = line.strip().rsplit(" ", 1)
            rows.append((image.split("@", 1)[1], int(label)))
    return rows


def vision_datasets_fewshot(rows, k, seed):
    """sample_few_shot_subset of vision_datasets for one label per image, written out from its source."""
    images = list(rows)
    rng = random.Random(seed)
    rng.shuffle(images)
    n = [0] * (max(label for _, label in rows) + 1)
    out = []
    for image in images:
        count = n[image[1]]
        if count >= k:
            continue
        if count <= k / 2 or count <= 1.5 * k:
            out.append(image)
            n[image[1]] += 1
        if min(n) >= k:
            break
    return out


def mvlpt_val_split(rows, fraction=0.2):
    """MVLPT's get_dataloader split: per class the first ceil(n * 0.2) indices are val, the rest train."""
    labels = [label for _, label in rows]
    val_idx = set()
    for label in dict.fromkeys(labels):
        idxs = [i for i, y in enumerate(labels) if y == label]
        val_idx |= set(idxs[:math.ceil(len(idxs) * fraction)])
    train = [rows[i] for i in sorted(set(range(len(rows))) - val_idx)]
    return train, [rows[i] for i in sorted(val_idx)]


def members(items, folder, archive):
    base = os.path.join(folder, "extracted", archive) + os.sep
    assert all(d.impath.startswith(base) for d in items)
    return [(d.impath[len(base):].replace(os.sep, "/"), d.label) for d in items]


def test_iris_layout_loads_with_labels_names_and_extracted_images(tmp_path):
    folder = elevater_iris(str(tmp_path))
    ds = load(tmp_path)
    assert ds.classnames == ELEVATER_CLASSES
    train_rows = index_rows(folder, "train.txt")
    train, val = mvlpt_val_split(train_rows)
    assert members(ds.train_x, folder, "train.zip") == train
    assert members(ds.val, folder, "train.zip") == val
    assert members(ds.test, folder, "val.zip") == index_rows(folder, "test.txt")
    assert all(os.path.isfile(d.impath) for d in ds.train_x + ds.test)
    assert all(d.classname == ELEVATER_CLASSES[d.label] for d in ds.train_x)
    # extracted once: a second load reuses the folders even without the archives
    os.remove(os.path.join(folder, "train.zip"))
    os.remove(os.path.join(folder, "val.zip"))
    assert [d.impath for d in load(tmp_path).test] == [d.impath for d in ds.test]
    assert not glob.glob(os.path.join(folder, "extracted", ".partial-*"))


@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fewshot_is_vision_datasets_sample_then_mvlpt_val_split(tmp_path, k, seed):
    folder = elevater_iris(str(tmp_path))
    ds = load(tmp_path, num_shots=k, seed=seed)
    sample = vision_datasets_fewshot(index_rows(folder, "train.txt"), k, seed)
    if k == 1:  # MVLPT: train and val are the same images
        expected_train, expected_val = sample, sample
    else:
        expected_train, expected_val = mvlpt_val_split(sample)
    assert members(ds.train_x, folder, "train.zip") == expected_train
    assert members(ds.val, folder, "train.zip") == expected_val
    assert len(ds.test) == 3 * 2


def test_fewshot_differs_across_seeds_and_repeats_for_a_seed(tmp_path):
    elevater_iris(str(tmp_path), n_train=10)
    draws = {seed: [d.impath for d in load(tmp_path, num_shots=4, seed=seed).train_x] for seed in (1, 2)}
    assert draws[1] != draws[2]
    assert draws[1] == [d.impath for d in load(tmp_path, num_shots=4, seed=1).train_x]


def test_coco_layout_orders_labels_by_category_id(tmp_path):
    folder = elevater_coco(str(tmp_path))
    ds = load(tmp_path, name="resisc45_clip")
    assert ds.classnames == ["airport", "beach", "forest"]  # ids 1, 2, 3 though listed 2, 1, 3
    with open(os.path.join(folder, "test.json")) as f:
        coco = json.load(f)
    cat_of = {a["image_id"]: a["category_id"] for a in coco["annotations"]}
    expected = [(img["file_name"].split("@", 1)[1], cat_of[img["id"]] - 1) for img in coco["images"]]
    assert members(ds.test, folder, "images.zip") == expected
    assert all(d.classname == ds.classnames[d.label] for d in ds.test)


def test_classnames_txt_overrides_the_label_map(tmp_path):
    folder = elevater_iris(str(tmp_path))
    with open(os.path.join(folder, "classnames.txt"), "w") as f:
        f.write("plane\ncar\nsmall bird\n")
    assert load(tmp_path).classnames == ["plane", "car", "small bird"]
    with open(os.path.join(folder, "classnames.txt"), "w") as f:
        f.write("plane\ncar\n")
    with pytest.raises(DataError, match="has 2 names but cifar-10 has 3 classes"):
        load(tmp_path)


def test_base_new_subsample(tmp_path):
    elevater_iris(str(tmp_path))
    assert load(tmp_path, num_shots=2, subsample="base").classnames == ["airplane", "automobile"]
    assert load(tmp_path, num_shots=2, subsample="new").classnames == ["bird"]


@pytest.mark.parametrize("name", sorted(n for n, i in ELEVATER_DATASETS.items() if not i.multilabel))
def test_each_elevater_config_names_a_known_dataset(name):
    cfg = get_cfg_default()
    merge_from_file(cfg, os.path.join(REPO, "configs", "datasets", f"elevater_{name}.yaml"))
    assert (cfg.DATASET.NAME, cfg.DATASET.ELEVATER_NAME) == ("Elevater", name)


def test_errors_are_one_sentence(tmp_path):
    with pytest.raises(DataError, match='DATASET.ELEVATER_NAME is "cifar10"; set it to one of caltech-101, cifar-10'):
        load(tmp_path, name="cifar10")
    with pytest.raises(DataError, match="voc-2007-classification is multi-label .* not supported"):
        load(tmp_path, name="voc-2007-classification")
    with pytest.raises(DataError, match=r"cifar-10 not found at .*classification/cifar_10_20211007; set DATASET.ROOT"):
        load(tmp_path)
    folder = elevater_iris(str(tmp_path))
    with open(os.path.join(folder, "test.txt"), "a") as f:
        f.write("val.zip@bird/x.png 7\n")
    with pytest.raises(DataError, match=r"line 7 of .*test.txt is 'val.zip@bird/x.png 7', not '<image> <one label"):
        load(tmp_path)
    folder = elevater_iris(str(tmp_path / "b"))
    os.remove(os.path.join(folder, "val.zip"))
    with pytest.raises(DataError, match=r"archive .*val.zip of cifar-10 is missing"):
        load(tmp_path / "b")
    with open(os.path.join(folder, "val.zip"), "w") as f:
        f.write("not a zip")
    with pytest.raises(DataError, match="val.zip is not a readable zip archive"):
        load(tmp_path / "b")


def test_check_command_reads_an_elevater_dataset(tmp_path, capsys):
    from datasets.check import main

    elevater_iris(str(tmp_path))
    assert main(["--root", str(tmp_path), "--dataset", "Elevater", "--elevater-name", "cifar-10"]) == 0
    out = capsys.readouterr().out
    assert "classes: 3" in out and "train: 12" in out and "val: 6" in out and "test: 6" in out


def shots_and_seed(**keys):
    from datasets.elevater import elevater_shots_and_seed
    cfg = get_cfg_default()
    for key, value in keys.items():
        cfg.merge_from_list([key.replace("__", "."), value])
    return elevater_shots_and_seed(cfg)


def test_shots_and_seed_follow_the_originals_keys():
    """MVLPT's ELEVATER loader reads NUM_SAMPLES_PER_CLASS (default 20) and RANDOM_SEED_SAMPLING, which
    its --shots / --seed set together with NUM_SHOTS / SEED."""
    assert shots_and_seed() == (20, -1)  # no --shots: its 20; no --seed: its -1
    assert shots_and_seed(DATASET__NUM_SHOTS=4, SEED=3) == (4, 3)  # what --shots 4 --seed 3 sets here
    assert shots_and_seed(DATASET__NUM_SAMPLES_PER_CLASS=8, DATASET__NUM_SHOTS=4) == (8, -1)  # its key wins
    assert shots_and_seed(DATASET__RANDOM_SEED_SAMPLING=5, SEED=3) == (20, 5)
    assert shots_and_seed(DATASET__NUM_SAMPLES_PER_CLASS=-1) == (-1, -1)  # the whole train set


def test_the_draw_reads_num_samples_per_class_and_random_seed_sampling(tmp_path):
    folder = elevater_iris(str(tmp_path), n_train=10)
    cfg = get_cfg_default()
    cfg.DATASET.NAME, cfg.DATASET.ELEVATER_NAME, cfg.DATASET.ROOT = "Elevater", "cifar-10", str(tmp_path)
    cfg.DATASET.NUM_SAMPLES_PER_CLASS, cfg.DATASET.RANDOM_SEED_SAMPLING = 4, 7
    ds = build_dataset(cfg)
    expected_train, _ = mvlpt_val_split(vision_datasets_fewshot(index_rows(folder, "train.txt"), 4, 7))
    assert members(ds.train_x, folder, "train.zip") == expected_train
