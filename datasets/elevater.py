"""ELEVATER's image-classification datasets, read from the folders its ``vision_datasets`` package downloads.

MVLPT fetches these 20 datasets at run time with Microsoft's ``vision_datasets`` (``DatasetHub``):
each lands in ``<DATASET.ROOT>/<root_folder>/`` (e.g. ``classification/cifar_10_20211007/``) as
index files, a label map and zip archives. Nothing is downloaded here; a user who has those
folders names one with ``DATASET.NAME Elevater`` + ``DATASET.ELEVATER_NAME <name>`` (MVLPT's
``--dataset`` names, e.g. ``cifar-10``).

Formats read (facts from ``vision_datasets``' IRIS and COCO docs and MVLPT's
``resources/datasets/vision_datasets.json``):
- IRIS index (``train.txt``...): ``<image> <label>[,<label>...]`` per line, labels from 0, the
  image either ``<archive>.zip@<member>`` or a path relative to the dataset folder; the label
  map (``labels.txt``/``labelmap.txt``) holds one class name per line.
- COCO json (``train.json``, ``*_meta.json``): ``images`` (``id``, ``file_name``),
  ``annotations`` (``image_id``, ``category_id``), ``categories`` (``id``, ``name``); the label is
  the category's position in id order.
Images inside a zip are extracted once into ``<root_folder>/extracted/<archive>.zip/`` (our
loader and the feature cache read files, not archive members).

Few-shot protocol, as MVLPT runs it (``construct_dataloader``): K = DATASET.NUM_SAMPLES_PER_CLASS and
the seed DATASET.RANDOM_SEED_SAMPLING, which its --shots / --seed set (``elevater_shots_and_seed``: with
those keys at their defaults, NUM_SHOTS and SEED stand in; neither set: its 20 shots); the train manifest is sampled by
``vision_datasets``' ``sample_few_shot_subset(K, seed)`` (``random.Random(seed)`` shuffles the
images, then each image is kept while its class has fewer than K), then split per class into val
(the first ceil(20 %) of each class, in sampled order) and train (the rest); at 1 shot train and
val are the same images. The test set is the whole test manifest. ELEVATER's own val index is
not used (MVLPT does not use it either).

Class names come from the label map, or from ``<root_folder>/classnames.txt`` (one per line) when
present, e.g. to use MVLPT's prompt class names (its ``class_map``), which are worded differently.
Not supported: multi-label datasets (voc-2007-classification: our trainers use one label per
image) and downloading.
"""
import logging
import math
import os
import random
import shutil
import tempfile
import zipfile
from dataclasses import dataclass

from engine.data.datasets import DATASET_REGISTRY, Datum, DatasetBase
from engine.errors import DataError

from .utils import check_images_exist, dataset_root, doc_ref, malformed_line, read_json

logger = logging.getLogger(__name__)

SECTION = "Elevater"
VAL_FRACTION = 0.2  # MVLPT's val_split in construct_dataloader
DEFAULT_SAMPLES_PER_CLASS = 20  # MVLPT's train.py defaults of DATASET.NUM_SAMPLES_PER_CLASS
DEFAULT_SEED_SAMPLING = 1  # ... and of DATASET.RANDOM_SEED_SAMPLING


@dataclass(frozen=True)
class ElevaterInfo:
    root_folder: str  # where vision_datasets puts it under DATASET.ROOT
    index: dict  # split -> index file (IRIS txt or COCO json)
    labelmap: str = ""  # IRIS label map; empty for COCO (names in the json)
    multilabel: bool = False


def _iris(folder, train="train.txt", test="test.txt", labelmap="labels.txt", **kw):
    return ElevaterInfo(f"classification/{folder}", {"train": train, "test": test}, labelmap, **kw)


def _coco(folder, train, test):
    return ElevaterInfo(f"classification/{folder}", {"train": train, "test": test})


# ELEVATER's 20 classification datasets as MVLPT's vision_datasets.json lists them (train and test only:
# MVLPT carves val from the few-shot train sample).
ELEVATER_DATASETS = {
    "caltech-101": _iris("caltech_101_20211007"),
    "cifar-10": _iris("cifar_10_20211007"),
    "cifar-100": _iris("cifar100_20200721", train="train_images.txt", test="test_images.txt"),
    "country211": _iris("country211_20210924"),
    "dtd": _iris("dtd_20211007"),
    "eurosat_clip": _iris("eurosat_clip_20210930"),
    "fer-2013": _iris("fer_2013_20211008"),
    "fgvc-aircraft-2013b-variants102": _iris("fgvc_aircraft_2013b_variants102_20211007"),
    "food-101": _iris("food_101_20211007"),
    "gtsrb": _iris("gtsrb_20210923", labelmap="labelmap.txt"),
    "hateful-memes": _coco("hateful_memes_20211014", "train_meta.json", "test_meta.json"),
    "kitti-distance": _coco("kitti_distance_20210923", "train_meta.json", "test_meta.json"),
    "mnist": _iris("mnist_20211008"),
    "oxford-flower-102": _iris("oxford_flower_102_20211007"),
    "oxford-iiit-pets": _iris("oxford_iiit_pets_20211007"),
    "patch-camelyon": _iris("patch_camelyon_20211007"),
    "rendered-sst2": _iris("rendered_sst2_20210924"),
    "resisc45_clip": _coco("resisc45_clip_20210924", "train.json", "test.json"),
    "stanford-cars": _iris("stanford_cars_20211007"),
    "voc-2007-classification": _iris("voc2007_20211007", train="train_ic.txt", test="test_ic.txt", multilabel=True),
}


def elevater_fewshot(items, num_shots, seed):
    """``vision_datasets``' ``sample_few_shot_subset`` for single-label images: shuffle a copy with
    ``random.Random(seed)``, keep an image while its class has fewer than ``num_shots``, stop when all have."""
    order = list(items)
    random.Random(seed).shuffle(order)
    counts = {label: 0 for label in {item.label for item in items}}
    kept = []
    for item in order:
        if counts[item.label] >= num_shots:
            continue
        kept.append(item)
        counts[item.label] += 1
        if min(counts.values()) >= num_shots:
            break
    return kept


def elevater_shots_and_seed(cfg):
    """The shots and seed of an ELEVATER draw: MVLPT's loader reads DATASET.NUM_SAMPLES_PER_CLASS
    and DATASET.RANDOM_SEED_SAMPLING, which its --shots and --seed set together with NUM_SHOTS and
    SEED. So each of those keys wins when changed from its default (20, 1); otherwise NUM_SHOTS
    (when set) and SEED stand in for it, and with neither the original's 20 shots are drawn."""
    d = cfg.DATASET
    shots = d.NUM_SAMPLES_PER_CLASS
    if shots == DEFAULT_SAMPLES_PER_CLASS and d.NUM_SHOTS != -1:
        shots = d.NUM_SHOTS
    seed = d.RANDOM_SEED_SAMPLING
    if seed == DEFAULT_SEED_SAMPLING:
        seed = cfg.SEED  # the original's --seed (even its default -1, which random.Random reads as 1)
    return shots, seed


def split_val(items, fraction=VAL_FRACTION):
    """MVLPT's class-balanced split: per class the first ceil(n * fraction) items (dataset order) are val."""
    per_class = {}
    for idx, item in enumerate(items):
        per_class.setdefault(item.label, []).append(idx)
    val_idx = {i for idxs in per_class.values() for i in idxs[:math.ceil(len(idxs) * fraction)]}
    train = [item for i, item in enumerate(items) if i not in val_idx]
    val = [item for i, item in enumerate(items) if i in val_idx]
    return train, val


@DATASET_REGISTRY.register()
class Elevater(DatasetBase):
    """One ELEVATER dataset, chosen by ``DATASET.ELEVATER_NAME``, in ``vision_datasets``' on-disk layout."""

    def __init__(self, cfg):
        name = cfg.DATASET.get("ELEVATER_NAME", "")
        if name not in ELEVATER_DATASETS:
            raise DataError(
                f'DATASET.ELEVATER_NAME is "{name}"; set it to one of {", ".join(sorted(ELEVATER_DATASETS))} '
                f"(MVLPT's --dataset names), see {doc_ref(SECTION)}."
            )
        info = ELEVATER_DATASETS[name]
        if info.multilabel:
            raise DataError(
                f"Elevater: {name} is multi-label (several classes per image, scored by mAP) and the trainers here "
                f"train one label per image; it is not supported, see {doc_ref(SECTION)}."
            )
        self.name = name
        self.dataset_dir = os.path.join(dataset_root(cfg), info.root_folder)
        if not os.path.isdir(self.dataset_dir):
            raise DataError(
                f"Elevater: {name} not found at {self.dataset_dir}; set DATASET.ROOT to the folder vision_datasets "
                f"downloaded into (it holds {info.root_folder}/), see {doc_ref(SECTION)}."
            )
        if info.labelmap:
            classnames = self.read_labelmap(os.path.join(self.dataset_dir, info.labelmap))
            train = self.read_iris(info.index["train"], classnames)
            test = self.read_iris(info.index["test"], classnames)
        else:
            train, classnames = self.read_coco(info.index["train"])
            test, test_classnames = self.read_coco(info.index["test"])
            if test_classnames != classnames:
                raise DataError(f"Elevater: the categories of {info.index['train']} and {info.index['test']} in "
                                f"{self.dataset_dir} differ; re-download {name}.")
        classnames = self.override_classnames(classnames)
        train = [Datum(d.impath, d.label, 0, classnames[d.label]) for d in train]
        test = [Datum(d.impath, d.label, 0, classnames[d.label]) for d in test]
        check_images_exist(train + test, f"the index files of {self.dataset_dir}", "Elevater")

        num_shots, seed = elevater_shots_and_seed(cfg)
        if num_shots >= 1:
            train = elevater_fewshot(train, num_shots, seed)
            logger.info("Elevater %s: %d-shot sample (seed %s), vision_datasets' sampler", name, num_shots, seed)
        if num_shots == 1:  # MVLPT: one image per class cannot be split; train and val are the same
            val = list(train)
        else:
            train, val = split_val(train)
        train, val, test = self.subsample_classes(train, val, test, subsample=cfg.DATASET.SUBSAMPLE_CLASSES)
        super().__init__(train_x=train, val=val, test=test)

    # ---------------------------------------------------------------- readers

    def read_labelmap(self, path):
        if not os.path.exists(path):
            raise DataError(f"Elevater: label map {path} of {self.name} is missing; re-download it, see {doc_ref(SECTION)}.")
        with open(path, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
        if not names:
            raise DataError(f"Elevater: label map {path} is empty; re-download it.")
        return names

    def override_classnames(self, classnames):
        path = os.path.join(self.dataset_dir, "classnames.txt")
        if not os.path.exists(path):
            return classnames
        with open(path, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
        if len(names) != len(classnames):
            raise DataError(f"Elevater: {path} has {len(names)} names but {self.name} has {len(classnames)} classes; "
                            "write one name per class, in label order.")
        logger.info("Elevater %s: class names from %s", self.name, path)
        return names

    def read_iris(self, index_name, classnames):
        """``<image> <label>`` lines; the image path may hold spaces, so the label is the last field."""
        path = os.path.join(self.dataset_dir, index_name)
        if not os.path.exists(path):
            raise DataError(f"Elevater: index file {path} of {self.name} is missing; re-download it, see {doc_ref(SECTION)}.")
        items = []
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                parts = line.strip().rsplit(" ", 1)
                try:
                    image, labels = parts
                    labels = [int(x) for x in labels.split(",")]
                except ValueError:
                    raise malformed_line("Elevater", path, lineno, line, "'<image> <label index>'") from None
                if len(labels) != 1 or not 0 <= labels[0] < len(classnames):
                    raise malformed_line("Elevater", path, lineno, line,
                                         f"'<image> <one label index in 0..{len(classnames) - 1}>'")
                items.append(Datum(impath=self.image_path(image), label=labels[0]))
        return items

    def read_coco(self, index_name):
        """COCO classification json: one annotation per image; labels follow the category ids' order."""
        path = os.path.join(self.dataset_dir, index_name)
        if not os.path.exists(path):
            raise DataError(f"Elevater: index file {path} of {self.name} is missing; re-download it, see {doc_ref(SECTION)}.")
        coco = read_json(path, "Elevater")
        try:
            categories = sorted(coco["categories"], key=lambda c: c["id"])
            position = {c["id"]: i for i, c in enumerate(categories)}
            classnames = [str(c["name"]) for c in categories]
            labels = {}
            for ann in coco["annotations"]:
                if ann["image_id"] in labels:
                    raise DataError(f"Elevater: image {ann['image_id']} of {path} has several labels; only "
                                    "single-label datasets are supported.")
                labels[ann["image_id"]] = position[ann["category_id"]]
            items = [Datum(impath=self.image_path(img["file_name"]), label=labels[img["id"]]) for img in coco["images"]]
        except (KeyError, TypeError) as e:
            raise DataError(f"Elevater: {path} is not a COCO classification file (missing or bad {e}); "
                            "re-download it.") from None
        return items, classnames

    def image_path(self, entry):
        """``<archive>.zip@<member>`` -> the member extracted under ``extracted/<archive>.zip/``; else relative."""
        if "@" not in entry:
            return os.path.join(self.dataset_dir, entry)
        archive, member = entry.split("@", 1)
        return os.path.join(self.extracted(archive), member)

    def extracted(self, archive):
        """Extract ``archive`` once (into a temp folder renamed when complete, so a crash leaves nothing half-done)."""
        target = os.path.join(self.dataset_dir, "extracted", archive)
        if os.path.isdir(target):
            return target
        zip_path = os.path.join(self.dataset_dir, archive)
        if not os.path.exists(zip_path):
            raise DataError(f"Elevater: archive {zip_path} of {self.name} is missing (and not extracted at {target}); "
                            f"re-download it, see {doc_ref(SECTION)}.")
        parent = os.path.dirname(target)
        os.makedirs(parent, exist_ok=True)
        logger.info("Elevater %s: extracting %s once into %s", self.name, zip_path, target)
        tmp = tempfile.mkdtemp(prefix=".partial-", dir=parent)
        try:
            with zipfile.ZipFile(zip_path) as zf:
                zf.extractall(tmp)  # zipfile drops absolute and ".." parts of member names
            os.replace(tmp, target)
        except zipfile.BadZipFile as e:
            raise DataError(f"Elevater: {zip_path} is not a readable zip archive ({e}); re-download it.") from e
        except OSError:
            if not os.path.isdir(target):  # another process finished first: its copy is used
                raise
        finally:
            if os.path.isdir(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
        return target

