"""Shared reading, split and validation helpers for the dataset modules.

Split files follow CoOp's format ``{"train"|"val"|"test": [[relative_path, label, classname], ...]}``.
When a dataset has no split file, one is generated with CoOp's ratios from a fixed-seed
``random.Random`` (so generation is deterministic and never touches the global ``random``
state that few-shot sampling relies on) and written once; an existing split file is never
overwritten. Every user-fixable problem raises `engine.errors.DataError` with one sentence
naming the path and the DATASETS.md section.
"""
import json
import logging
import os
import random

from engine.data.datasets import Datum
from engine.errors import DataError
from engine.utils.io import atomic_write_text

logger = logging.getLogger(__name__)

# Seed of the RNG that generates missing split files; fixed so every user gets the same split.
SPLIT_SEED = 1
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
DATASETS_DOC = "DATASETS.md"


def doc_ref(section):
    """``DATASETS.md#section``: the anchor GitHub gives the heading ``## <Section>``."""
    return f"{DATASETS_DOC}#{section.lower()}"


def require_path(path, dataset, what, section=None, hint=""):
    """Raise DataError unless ``path`` exists; the message names it and the DATASETS.md section."""
    if os.path.exists(path):
        return path
    extra = f" {hint}" if hint else ""
    raise DataError(f"{dataset}: {what} not found at {path};{extra} see {doc_ref(section or dataset)}.")


def require_dataset_dir(dataset_dir, dataset, folder_name):
    if not os.path.isdir(dataset_dir):
        raise DataError(
            f"{dataset}: dataset folder {dataset_dir} not found; set DATASET.ROOT (--root) to the folder that "
            f"holds {folder_name}/, see {doc_ref(dataset)}."
        )
    return dataset_dir


def listdir_nohidden(path, sort=True):
    """Entries of ``path`` not starting with a dot (Dassl's helper), sorted so listing is deterministic."""
    items = [name for name in os.listdir(path) if not name.startswith(".")]
    return sorted(items) if sort else items


def list_subdirs(path):
    return [name for name in listdir_nohidden(path) if os.path.isdir(os.path.join(path, name))]


def list_images(folder, sort=True):
    """Image file names (by extension) in ``folder``: sorted, or in ``os.listdir`` order with ``sort=False``."""
    return [
        name for name in listdir_nohidden(folder, sort=sort)
        if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, name))
    ]


def read_json(path, dataset=None):
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as e:
        who = f"{dataset}: " if dataset else ""
        raise DataError(f"{who}{path} is not valid JSON ({e}); re-download it or delete it so it is generated again.") from e


def write_json_once(path, obj):
    """Write ``obj`` as JSON to ``path`` unless the file exists; never overwrites. Returns True if written."""
    if os.path.exists(path):
        logger.info("Keeping the existing %s", path)
        return False
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        atomic_write_text(path, json.dumps(obj, indent=1))
    except OSError as e:  # a read-only dataset folder: the split is deterministic, so only time is lost
        logger.warning("Could not write %s (%s); the split will be generated again next time", path, e)
        return False
    return True


def read_split(filepath, path_prefix, dataset="dataset"):
    """Read a CoOp split json; paths in it are relative to ``path_prefix``."""
    split = read_json(filepath, dataset)
    out = []
    for key in ("train", "val", "test"):
        rows = split.get(key) if isinstance(split, dict) else None
        if not isinstance(rows, list):
            raise DataError(
                f'{dataset}: split file {filepath} has no "{key}" list; a split file holds '
                '{"train"|"val"|"test": [[relative_path, label, classname], ...]}.'
            )
        items = []
        for row in rows:
            try:
                impath, label, classname = row
                items.append(Datum(impath=os.path.join(path_prefix, impath), label=int(label), classname=classname))
            except (TypeError, ValueError) as e:
                raise DataError(
                    f'{dataset}: split file {filepath} has a malformed "{key}" row {row!r}; '
                    "each row must be [relative_path, label, classname]."
                ) from e
        out.append(items)
    check_label_names(out, filepath, path_prefix, dataset)
    logger.info("Read split from %s", filepath)
    return tuple(out)


def check_label_names(parts, filepath, path_prefix, dataset="dataset"):
    """A published split file cannot carry our checksum; a flipped label shows as a label with two class
    names. Raise DataError naming the first entry whose class name is not its label's usual one."""
    names = {}
    for items in parts:
        for item in items:
            names.setdefault(item.label, {}).setdefault(item.classname, 0)
            names[item.label][item.classname] += 1
    for key, items in zip(("train", "val", "test"), parts):
        for n, item in enumerate(items):
            counts = names[item.label]
            usual = max(counts, key=counts.get)
            if len(counts) > 1 and item.classname != usual:
                raise DataError(
                    f'{dataset}: split file {filepath} has "{key}" entry {n} '
                    f"[{os.path.relpath(item.impath, path_prefix)!r}, {item.label}, {item.classname!r}], but {counts[usual]} other "
                    f"entries give label {item.label} the class name {usual!r}; fix the entry or re-download the file.")


def save_split(train, val, test, filepath, path_prefix):
    """Write a CoOp split json with paths relative to ``path_prefix``; an existing file is kept."""
    def rows(items):
        return [[os.path.relpath(item.impath, path_prefix), item.label, item.classname] for item in items]

    if write_json_once(filepath, {"train": rows(train), "val": rows(val), "test": rows(test)}):
        logger.info("Saved split to %s", filepath)


def _split_rng(rng):
    return rng if rng is not None else random.Random(SPLIT_SEED)


def split_trainval(trainval, p_val=0.2, rng=None, dataset="dataset"):
    """CoOp's ``split_trainval``: per label (first-appearance order), shuffle and put round(n * p_val) in val."""
    rng = _split_rng(rng)
    logger.info("Splitting trainval into %.0f%% train and %.0f%% val", 100 * (1 - p_val), 100 * p_val)
    tracker = {}
    for idx, item in enumerate(trainval):
        tracker.setdefault(item.label, []).append(idx)
    train, val = [], []
    for label, idxs in tracker.items():
        n_val = round(len(idxs) * p_val)
        if n_val < 1:
            raise DataError(
                f'{dataset}: class {label} ("{trainval[idxs[0]].classname}") has only {len(idxs)} train+val '
                f"images, too few to carve a {p_val:.0%} validation part; add images or provide a split file."
            )
        rng.shuffle(idxs)
        for n, idx in enumerate(idxs):
            (val if n < n_val else train).append(trainval[idx])
    return train, val


def split_three_ways(groups, p_trn=0.5, p_val=0.2, rng=None, dataset="dataset"):
    """Split ``[(label, classname, impaths), ...]`` per class into train/val/test (CoOp's 50/20/30)."""
    rng = _split_rng(rng)
    logger.info("Splitting into %.0f%% train, %.0f%% val and %.0f%% test",
                100 * p_trn, 100 * p_val, 100 * (1 - p_trn - p_val))
    train, val, test = [], [], []
    for label, classname, impaths in groups:
        impaths = list(impaths)
        rng.shuffle(impaths)
        n_total = len(impaths)
        n_train = round(n_total * p_trn)
        n_val = round(n_total * p_val)
        if n_train < 1 or n_val < 1 or n_total - n_train - n_val < 1:
            raise DataError(
                f'{dataset}: class "{classname}" has only {n_total} images, too few for a '
                f"{p_trn:.0%}/{p_val:.0%}/{1 - p_trn - p_val:.0%} train/val/test split; add images or provide a split file."
            )
        for part, paths in ((train, impaths[:n_train]), (val, impaths[n_train:n_train + n_val]),
                            (test, impaths[n_train + n_val:])):
            part.extend(Datum(impath=p, label=label, classname=classname) for p in paths)
    return train, val, test


def read_and_split_data(image_dir, p_trn=0.5, p_val=0.2, ignored=(), new_cnames=None, rng=None, dataset="dataset"):
    """CoOp's ``read_and_split_data``: ``image_dir/<category>/<images>``, categories sorted, labels from 0."""
    categories = [c for c in list_subdirs(image_dir) if c not in ignored]
    if not categories:
        raise DataError(f"{dataset}: no class folders in {image_dir}; see {doc_ref(dataset)}.")
    groups = []
    for label, category in enumerate(categories):
        folder = os.path.join(image_dir, category)
        impaths = [os.path.join(folder, name) for name in list_images(folder)]
        classname = new_cnames.get(category, category) if new_cnames else category
        groups.append((label, classname, impaths))
    return split_three_ways(groups, p_trn, p_val, rng=rng, dataset=dataset)


def malformed_line(dataset, path, lineno, line, expected):
    """The one-sentence error for a line of a dataset's text file that does not parse."""
    return DataError(f"{dataset}: line {lineno} of {path} is {line.strip()!r}, not {expected}; fix or re-download the file.")


def read_classnames(text_file, dataset="ImageNet"):
    """ImageNet's ``classnames.txt``: ``<wnid> <class name>`` per line -> ordered dict wnid -> name."""
    require_path(text_file, dataset, "classnames.txt", hint="copy it from imagenet/ or download it")
    classnames = {}
    with open(text_file) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.strip().split(" ")
            if parts and parts[0]:
                if len(parts) < 2 or not " ".join(parts[1:]).strip():  # a class without a name gives an empty prompt
                    raise malformed_line(dataset, text_file, lineno, line, "'<wnid> <class name>'")
                classnames[parts[0]] = " ".join(parts[1:])
    if not classnames:
        raise DataError(f"{dataset}: {text_file} holds no '<wnid> <class name>' lines; see {doc_ref(dataset)}.")
    return classnames


def check_images_exist(items, source, dataset="dataset", show=5):
    """Raise DataError naming the first few missing images and their count."""
    missing = [item.impath for item in items if not os.path.exists(item.impath)]
    if missing:
        shown = ", ".join(missing[:show]) + (", ..." if len(missing) > show else "")
        raise DataError(
            f"{dataset}: {len(missing)} of the {len(items)} images listed in {source} are missing ({shown}); "
            f"check DATASET.ROOT and the folder tree in {doc_ref(dataset)}."
        )


def verify_images(items, dataset="dataset"):
    """Open every image; raise DataError naming the first file that cannot be decoded."""
    from PIL import Image

    from engine.utils.tools import to_rgb

    for item in items:
        try:
            with Image.open(item.impath) as img:
                to_rgb(img, item.impath).load()
        except (OSError, ValueError, SyntaxError) as e:
            raise DataError(f"{dataset}: cannot read image {item.impath} ({e}); replace or delete the file.") from e


def apply_protocol(dataset_obj, cfg, train, val, test, fewshot_val=True):
    """CoOp's per-dataset tail: few-shot train (and val) sampling, then base/new class subsampling."""
    num_shots = cfg.DATASET.NUM_SHOTS
    if fewshot_val:
        train, val = dataset_obj.load_or_make_fewshot(train, val, num_shots, cfg.SEED, dataset_obj.dataset_dir)
        train, val, test = dataset_obj.subsample_classes(train, val, test, subsample=cfg.DATASET.SUBSAMPLE_CLASSES)
        return train, val, test
    # ImageNet: only train is sampled; val is the test set (CoOp)
    train, _ = dataset_obj.load_or_make_fewshot(train, None, num_shots, cfg.SEED, dataset_obj.dataset_dir)
    train, test = dataset_obj.subsample_classes(train, test, subsample=cfg.DATASET.SUBSAMPLE_CLASSES)
    return train, test, test


def dataset_root(cfg):
    root = cfg.DATASET.ROOT
    if not root:
        raise DataError("DATASET.ROOT is empty; pass --root DATA (the folder holding your datasets, see DATASETS.md).")
    return os.path.abspath(os.path.expanduser(root))


def load_or_generate_split(split_path, path_prefix, generate, dataset, sources=()):
    """Read ``split_path`` if it exists, else build the split with ``generate()`` and write it once.

    ``sources``: ``(path, description)`` pairs that ``generate`` needs; when one is missing too the
    error names both it and the split file, since either one fixes the problem.
    """
    if os.path.exists(split_path):
        train, val, test = read_split(split_path, path_prefix, dataset)
        check_images_exist(train + val + test, split_path, dataset)
        return train, val, test
    for path, what in sources:
        if not os.path.exists(path):
            raise DataError(
                f"{dataset}: neither the split file {split_path} nor the {what} {path} exists; fetch the split with "
                f"`python -m datasets.download --root DATA --dataset {dataset}` or add the {what}, see {doc_ref(dataset)}."
            )
    logger.info("%s: no split file at %s, generating one", dataset, split_path)
    train, val, test = generate()
    check_images_exist(train + val + test, f"the generated split of {path_prefix}", dataset)
    save_split(train, val, test, split_path, path_prefix)
    return train, val, test
