"""Every dataset loads from a miniature replica of its CoOp layout: class names, split sizes, split
generation, few-shot sampling as Dassl draws it, base/new subsampling, ImageNet-A/R rows, clear errors."""
import json
import os
import random
import shutil

import pytest

import datasets  # noqa: F401  (registers every dataset)
from dataset_replicas import (EXPECTED, IMAGENET, IMAGENET_A_ROWS, IMAGENET_R_ROWS, REPLICA_NAMES, REPLICA_OPTS,
                              SPLIT_FILES, build_replica)
from engine.config import get_cfg_default, merge_from_file
from engine.data.datasets import DATASET_REGISTRY, build_dataset
from engine.errors import DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_ONLY = {"ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR"}
WITH_VAL = [n for n in REPLICA_NAMES if n not in TEST_ONLY]
DASSL_FEWSHOT = [n for n in WITH_VAL if n != "Elevater"]  # Elevater samples as MVLPT does (test_datasets_elevater.py)
GENERATED = [n for n in REPLICA_NAMES if EXPECTED[n]["generated"]]


def make_cfg(name, root, num_shots=-1, seed=1, subsample="all"):
    cfg = get_cfg_default()
    cfg.DATASET.NAME = name
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NUM_SHOTS = num_shots
    cfg.DATASET.SUBSAMPLE_CLASSES = subsample
    cfg.SEED = seed
    cfg.merge_from_list([x for kv in REPLICA_OPTS.get(name, {}).items() for x in kv])
    return cfg


def load(name, root, **kw):
    return build_dataset(make_cfg(name, root, **kw))


def sizes(ds):
    return len(ds.train_x), len(ds.val or []), len(ds.test)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    """One replica of each layout (with split files), shared by the read-only tests of this module."""
    base = tmp_path_factory.mktemp("replicas")
    return {name: build_replica(name, base / name) for name in REPLICA_NAMES}


@pytest.mark.parametrize("name", DATASET_REGISTRY.registered_names())
def test_every_registered_dataset_has_a_replica(name):
    """One test id per registered dataset (timm-style): a new dataset without a replica fails here by name."""
    assert name in REPLICA_NAMES, f"{name} is registered but tests/dataset_replicas.py has no replica of it"
    assert name in EXPECTED


def test_every_replica_is_a_registered_dataset():
    assert set(REPLICA_NAMES) <= set(DATASET_REGISTRY.registered_names())


@pytest.mark.parametrize("name", REPLICA_NAMES)
def test_replica_loads_with_coop_class_names_and_split_sizes(name, replicas):
    ds = load(name, replicas[name])
    exp = EXPECTED[name]
    assert ds.classnames == exp["classnames"]
    assert ds.num_classes == len(exp["classnames"])
    assert sizes(ds) == exp["split"]
    assert all(os.path.isabs(item.impath) and os.path.exists(item.impath) for item in ds.train_x + ds.test)
    if name in TEST_ONLY:
        assert ds.train_x == ds.test  # CoOp: test-only datasets give train_x = test
    if name == "ImageNet":
        assert ds.val == ds.test  # CoOp evaluates ImageNet on its val folder, used as val and test


@pytest.mark.parametrize("name", GENERATED)
def test_missing_split_file_is_generated_deterministically_and_written(name, tmp_path):
    root_a = build_replica(name, tmp_path / "a", with_split=False)
    root_b = build_replica(name, tmp_path / "b", with_split=False)
    split_a = os.path.join(root_a, SPLIT_FILES[name])
    assert not os.path.exists(split_a)
    ds = load(name, root_a)
    assert sizes(ds) == EXPECTED[name]["generated"]
    assert ds.classnames == EXPECTED[name]["classnames"]
    with open(split_a) as f:
        written = json.load(f)
    assert tuple(len(written[k]) for k in ("train", "val", "test")) == EXPECTED[name]["generated"]
    assert not any(os.path.isabs(row[0]) for k in written for row in written[k])  # portable paths
    load(name, root_b)  # another user, another folder: the same split
    with open(os.path.join(root_b, SPLIT_FILES[name])) as f:
        assert json.load(f) == written
    again = load(name, root_a)  # now read from the written file
    assert [d.impath for d in again.train_x] == [d.impath for d in ds.train_x]
    assert [d.impath for d in again.test] == [d.impath for d in ds.test]


def test_existing_split_file_is_never_overwritten(replicas, tmp_path):
    root = build_replica("DescribableTextures", tmp_path)
    path = os.path.join(root, SPLIT_FILES["DescribableTextures"])
    before = open(path, "rb").read()
    load("DescribableTextures", root, num_shots=2)
    assert open(path, "rb").read() == before


def dassl_fewshot(items, k):
    """Dassl's generate_fewshot_dataset, written out: labels in first-appearance order, random.sample."""
    by_label = {}
    for item in items:
        by_label.setdefault(item.label, []).append(item)
    out = []
    for group in by_label.values():
        out.extend(random.sample(group, k) if len(group) >= k else group)
    return out


@pytest.mark.parametrize("name", DASSL_FEWSHOT)
def test_fewshot_matches_dassl_draws_and_is_cached_portably(name, tmp_path):
    root = build_replica(name, tmp_path / "data")
    full = load(name, root)
    k, seed = 2, 3
    ds = load(name, root, num_shots=k, seed=seed)
    random.seed(seed)  # what CoOp's train.py does before building the dataset
    expected_train = dassl_fewshot(full.train_x, k)
    assert [d.impath for d in ds.train_x] == [d.impath for d in expected_train]
    if name == "ImageNet":  # CoOp samples only train; val is the whole test set
        assert ds.val == full.test
    else:
        expected_val = dassl_fewshot(full.val, min(k, 4))
        assert [d.impath for d in ds.val] == [d.impath for d in expected_val]
    assert sizes(ds)[2] == len(full.test)
    cache_root = getattr(ds, "dataset_dir")
    cache = os.path.join(cache_root, "split_fewshot", f"shot_{k}-seed_{seed}.json")
    with open(cache) as f:
        rows = json.load(f)["train"]
    assert rows and not any(os.path.isabs(r[0]) for r in rows)
    cached = load(name, root, num_shots=k, seed=seed)
    assert [d.impath for d in cached.train_x] == [d.impath for d in ds.train_x]


def test_fewshot_is_deterministic_across_folders_and_differs_across_seeds(tmp_path):
    def relative_sample(root, seed):
        ds = load("Food101", root, num_shots=2, seed=seed)
        return [os.path.relpath(d.impath, root) for d in ds.train_x + ds.val]

    a = build_replica("Food101", tmp_path / "a")
    b = build_replica("Food101", tmp_path / "b")
    assert relative_sample(a, 1) == relative_sample(b, 1)
    assert relative_sample(a, 1) != relative_sample(a, 2)
    assert len(relative_sample(a, 1)) == 4 * 2 + 4 * 2


def test_corrupt_fewshot_cache_is_rebuilt(tmp_path):
    root = build_replica("OxfordPets", tmp_path)
    first = load("OxfordPets", root, num_shots=2, seed=1)
    cache = os.path.join(root, "oxford_pets", "split_fewshot", "shot_2-seed_1.json")
    with open(cache, "w") as f:
        f.write("{not json")
    again = load("OxfordPets", root, num_shots=2, seed=1)
    assert [d.impath for d in again.train_x] == [d.impath for d in first.train_x]
    with open(cache) as f:
        json.load(f)  # rewritten, valid again


@pytest.mark.parametrize("name,base,new", [
    ("OxfordPets", ["abyssinian", "american_bulldog"], ["american_pit_bull_terrier", "basset_hound"]),
    ("EuroSAT", EXPECTED["EuroSAT"]["classnames"][:5], EXPECTED["EuroSAT"]["classnames"][5:]),
    ("Caltech101", ["face", "leopard", "motorbike"], ["accordion", "airplane", "anchor"]),
    ("ImageNet", ["tench", "goldfish", "great white shark"], ["tiger shark", "hammerhead shark", "electric ray"]),
])
def test_subsample_base_new_relabels_from_zero(name, base, new, replicas):
    for subsample, names in (("base", base), ("new", new)):
        ds = load(name, replicas[name], num_shots=1, seed=1, subsample=subsample)
        assert ds.classnames == names
        for part in (ds.train_x, ds.val, ds.test):
            assert {d.label for d in part} == set(range(len(names)))
            assert {d.classname for d in part} == set(names)


@pytest.mark.parametrize("name,rows", [("ImageNetA", IMAGENET_A_ROWS), ("ImageNetR", IMAGENET_R_ROWS)])
def test_imagenet_a_r_expose_their_rows_in_the_imagenet_classifier(name, rows, replicas):
    ds = load(name, replicas[name])
    assert ds.class_indices_in_imagenet == rows
    imagenet_names = [n for _, n in IMAGENET]
    assert [imagenet_names[r] for r in ds.class_indices_in_imagenet] == ds.classnames


@pytest.mark.parametrize("name", ["ImageNet", "ImageNetV2", "ImageNetSketch", "OxfordPets"])
def test_other_datasets_have_no_imagenet_rows(name, replicas):
    assert getattr(load(name, replicas[name]), "class_indices_in_imagenet", None) is None


def test_variant_falls_back_to_imagenets_classnames_file(tmp_path):
    root = build_replica("ImageNetR", tmp_path)
    os.remove(os.path.join(root, "imagenet-rendition", "classnames.txt"))
    with pytest.raises(DataError, match="classnames.txt not found"):
        load("ImageNetR", root)
    build_replica("ImageNet", tmp_path)
    assert load("ImageNetR", root).class_indices_in_imagenet == IMAGENET_R_ROWS


# ------------------------------------------------------------------------------------------ errors

def test_missing_dataset_folder_names_path_and_section(tmp_path):
    with pytest.raises(DataError) as e:
        load("OxfordPets", tmp_path)
    msg = str(e.value)
    assert os.path.join(str(tmp_path), "oxford_pets") in msg and "DATASETS.md#oxfordpets" in msg


def test_empty_root_is_a_clear_error():
    with pytest.raises(DataError, match="DATASET.ROOT is empty"):
        load("OxfordPets", "")


def test_missing_split_and_annotations_names_both(tmp_path):
    root = build_replica("OxfordPets", tmp_path, with_split=False)
    os.remove(os.path.join(root, "oxford_pets", "annotations", "test.txt"))
    with pytest.raises(DataError) as e:
        load("OxfordPets", root)
    msg = str(e.value)
    assert "split_zhou_OxfordPets.json" in msg and "test.txt" in msg and "datasets.download" in msg


def test_split_pointing_at_missing_images_names_first_few_and_count(tmp_path):
    root = build_replica("Food101", tmp_path)
    image_dir = os.path.join(root, "food-101", "images", "baklava")
    gone = sorted(os.listdir(image_dir))
    shutil.rmtree(image_dir)
    with pytest.raises(DataError) as e:
        load("Food101", root)
    msg = str(e.value)
    assert f"{len(gone)} of the 40 images" in msg
    assert "split_zhou_Food101.json" in msg and gone[0] in msg and "..." in msg


def test_invalid_split_json_names_the_file(tmp_path):
    root = build_replica("EuroSAT", tmp_path)
    path = os.path.join(root, SPLIT_FILES["EuroSAT"])
    with open(path, "w") as f:
        f.write('{"train": [')
    with pytest.raises(DataError, match="split_zhou_EuroSAT.json is not valid JSON"):
        load("EuroSAT", root)
    with open(path, "w") as f:
        json.dump({"train": [], "val": []}, f)
    with pytest.raises(DataError, match='has no "test" list'):
        load("EuroSAT", root)


@pytest.mark.parametrize("name,relpath,lineno,bad", [
    ("UCF101", "ucf101/ucfTrainTestlist/trainlist01.txt", 3, "ApplyEyeMakeup_v_g03_c01.avi 1"),  # no "/"
    ("UCF101", "ucf101/ucfTrainTestlist/testlist01.txt", 2, "Archery/v_1/x.avi"),  # two "/"
    ("UCF101", "ucf101/ucfTrainTestlist/classInd.txt", 2, "two ApplyLipstick"),  # index not an int
    ("UCF101", "ucf101/ucfTrainTestlist/classInd.txt", 4, "4"),  # no action name
    ("OxfordPets", "oxford_pets/annotations/trainval.txt", 3, "Abyssinian_2 1 1"),  # a field missing
    ("OxfordPets", "oxford_pets/annotations/test.txt", 1, "Abyssinian_6 one 1 1"),  # class id not an int
])
def test_malformed_annotation_line_names_file_and_line(name, relpath, lineno, bad, tmp_path):
    root = build_replica(name, tmp_path, with_split=False)  # the split is generated from these files
    path = os.path.join(root, relpath)
    with open(path) as f:
        lines = f.read().splitlines()
    lines[lineno - 1] = bad
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    with pytest.raises(DataError) as e:
        load(name, root)
    assert str(e.value).startswith(f"{name}: line {lineno} of {path} is {bad!r}, not ")
    assert str(e.value).count(". ") == 0  # one sentence


def test_classnames_line_without_a_name_is_named(tmp_path):
    root = build_replica("ImageNet", tmp_path)
    path = os.path.join(root, "imagenet", "classnames.txt")
    with open(path, "a") as f:
        f.write("n99999999\n")
    with pytest.raises(DataError, match=f"line 7 of {path} is 'n99999999', not '<wnid> <class name>'"):
        load("ImageNet", root)


@pytest.mark.parametrize("row", [["a.jpg", "x", "cat"], ["a.jpg", 0], "a.jpg 0 cat", [3, 0, "cat"]])
def test_malformed_split_json_row_is_named(row, tmp_path):
    root = build_replica("EuroSAT", tmp_path)
    path = os.path.join(root, SPLIT_FILES["EuroSAT"])
    with open(path) as f:
        split = json.load(f)
    split["val"][1] = row
    with open(path, "w") as f:
        json.dump(split, f)
    with pytest.raises(DataError, match=f'split file {path} has a malformed "val" row'):
        load("EuroSAT", root)


def test_too_few_images_to_generate_a_split(tmp_path):
    root = build_replica("DescribableTextures", tmp_path, with_split=False)
    folder = os.path.join(root, "dtd", "images", "bubbly")
    for name in sorted(os.listdir(folder))[2:]:
        os.remove(os.path.join(folder, name))
    with pytest.raises(DataError, match='class "bubbly" has only 2 images'):
        load("DescribableTextures", root)


def test_imagenet_without_classnames_says_how_to_get_it(tmp_path):
    root = build_replica("ImageNet", tmp_path)
    os.remove(os.path.join(root, "imagenet", "classnames.txt"))
    with pytest.raises(DataError, match="classnames.txt not found at .*datasets.download"):
        load("ImageNet", root)


def test_unreadable_image_is_named(tmp_path, capsys):
    from datasets.check import main

    root = build_replica("Caltech101", tmp_path)
    bad = os.path.join(root, "caltech-101", "101_ObjectCategories", "anchor", "anchor_0003.jpg")
    with open(bad, "wb") as f:
        f.write(b"not a jpeg")
    assert main(["--root", root, "--dataset", "Caltech101"]) == 0  # loading lists files, does not decode them
    assert main(["--root", root, "--dataset", "Caltech101", "--verify-images"]) == 1
    assert f"cannot read image {bad}" in capsys.readouterr().err
    from engine.utils.tools import read_image  # what the data loader uses on each item

    with pytest.raises(DataError, match=f"Cannot read image {bad}"):
        read_image(bad)


# ------------------------------------------------------------------------------------------ tools

def test_check_command_prints_class_and_split_counts(replicas, capsys):
    from datasets.check import main

    assert main(["--root", replicas["OxfordFlowers"], "--dataset", "OxfordFlowers"]) == 0
    out = capsys.readouterr().out
    assert "classes: 4" in out and "train: 24" in out and "val: 8" in out and "test: 8" in out
    assert main(["--root", replicas["ImageNetA"], "--dataset", "ImageNetA"]) == 0
    assert "ImageNet rows: 3 (1, 3, 4" in capsys.readouterr().out
    assert main(["--root", "/nonexistent", "--dataset", "OxfordPets"]) == 1
    assert "DATASETS.md#oxfordpets" in capsys.readouterr().err


CONFIG_NAMES = {
    "oxford_pets": "OxfordPets", "oxford_flowers": "OxfordFlowers", "fgvc_aircraft": "FGVCAircraft",
    "dtd": "DescribableTextures", "eurosat": "EuroSAT", "stanford_cars": "StanfordCars", "food101": "Food101",
    "sun397": "SUN397", "caltech101": "Caltech101", "ucf101": "UCF101", "imagenet": "ImageNet",
    "imagenetv2": "ImageNetV2", "imagenet_sketch": "ImageNetSketch", "imagenet_a": "ImageNetA",
    "imagenet_r": "ImageNetR", "fashion_mnist": "FashionMNIST", "image_folder": "ImageFolder",
}


@pytest.mark.parametrize("stem,name", sorted(CONFIG_NAMES.items()))
def test_dataset_config_files_name_a_registered_dataset(stem, name, replicas):
    cfg = get_cfg_default()
    merge_from_file(cfg, os.path.join(REPO, "configs", "datasets", f"{stem}.yaml"))
    assert cfg.DATASET.NAME == name
    cfg.DATASET.ROOT = str(replicas[name])
    assert build_dataset(cfg).num_classes == len(EXPECTED[name]["classnames"])


def test_datasets_md_documents_every_dataset_with_its_check_command():
    with open(os.path.join(REPO, "DATASETS.md")) as f:
        doc = f.read()
    for name in REPLICA_NAMES:
        assert f"\n## {name}\n" in doc
        assert f"python -m datasets.check --root DATA --dataset {name}" in doc
