"""Fashion-MNIST (10 clothing classes), the embedded demo dataset, read from the original idx files.

Source files (``train-images-idx3-ubyte.gz`` ...) are taken from ``DATASET.ROOT/fashion_mnist/`` if they
are there, else from Debian's ``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``).
Every image the run needs is written once as a PNG under
``DATASET.ROOT/fashion_mnist/images/{train,test}/<label>_<class>/<index>.png`` so the rest of the pipeline
sees ordinary image paths. Val is carved from the official train set (80/20 per class, fixed seed,
as CoOp's ``split_trainval``); the official test set is the test split, optionally cut to the first
``DATASET.TEST_SUBSET`` images per class.
"""
import gzip
import logging
import os

import numpy as np

from engine.data.datasets import DATASET_REGISTRY, Datum, DatasetBase
from engine.errors import DataError

from .utils import apply_protocol, dataset_root, split_trainval

logger = logging.getLogger(__name__)

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# The official names are "T-shirt/top", "Trouser", ...; "/" cannot be in a folder name and reads badly
# in a prompt, and lower case fits "a photo of a {}.".
CLASSNAMES = ["T-shirt or top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
              "ankle boot"]


def _find(folder, stem):
    for name in (stem + ".gz", stem):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return path
    return None


def find_source_dir(dataset_dir):
    """The folder holding the four idx files: ``dataset_dir`` first, then Debian's package folder."""
    stems = [stem for pair in FILES.values() for stem in pair]
    for folder in (dataset_dir, DEBIAN_DIR):
        if all(_find(folder, stem) for stem in stems):
            return folder
    raise DataError(
        f"FashionMNIST: the idx files (train-images-idx3-ubyte.gz ...) are neither in {dataset_dir} nor in "
        f"{DEBIAN_DIR}; run `sudo apt-get install dataset-fashion-mnist` or put the four files in {dataset_dir}."
    )


def read_idx(path, expected_magic):
    """Parse an idx file (big-endian header, then uint8 data) into a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
        magic = int.from_bytes(raw[:4], "big")
        if magic != expected_magic:
            raise ValueError(f"magic number {magic}, expected {expected_magic}")
        ndim = raw[3]
        dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
        data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
        return data.reshape(dims)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"FashionMNIST: {path} is not a readable idx file ({e}); reinstall dataset-fashion-mnist or replace the file.") from e


def class_folder(label):
    return f"{label}_{CLASSNAMES[label].replace(' ', '_')}"


@DATASET_REGISTRY.register()
class FashionMNIST(DatasetBase):
    dataset_dir = "fashion_mnist"

    def __init__(self, cfg):
        root = dataset_root(cfg)
        self.dataset_dir = os.path.join(root, self.dataset_dir)
        self.image_dir = os.path.join(self.dataset_dir, "images")
        self.source_dir = find_source_dir(self.dataset_dir)
        arrays = {split: self.read_split(split) for split in FILES}

        trainval = self.make_items("train", arrays["train"][1])
        train, val = split_trainval(trainval, p_val=0.2, dataset="FashionMNIST")
        test = self.make_items("test", arrays["test"][1])
        test_subset = cfg.DATASET.get("TEST_SUBSET", -1)
        if test_subset is not None and test_subset > 0:
            test = first_per_class(test, test_subset)
        train, val, test = apply_protocol(self, cfg, train, val, test)
        self.materialize(train + val, arrays["train"][0])
        self.materialize(test, arrays["test"][0])
        super().__init__(train_x=train, val=val, test=test)

    def read_split(self, split):
        images_stem, labels_stem = FILES[split]
        images = read_idx(_find(self.source_dir, images_stem), 2051)
        labels = read_idx(_find(self.source_dir, labels_stem), 2049)
        if len(images) != len(labels):
            raise DataError(f"FashionMNIST: {images_stem} has {len(images)} images but {labels_stem} has {len(labels)} labels in {self.source_dir}.")
        if len(labels) and int(labels.max()) >= len(CLASSNAMES):
            raise DataError(f"FashionMNIST: {labels_stem} in {self.source_dir} holds label {int(labels.max())}, "
                            f"beyond the {len(CLASSNAMES)} classes; reinstall dataset-fashion-mnist or replace the file.")
        return images, labels

    def make_items(self, split, labels):
        return [
            Datum(impath=os.path.join(self.image_dir, split, class_folder(int(y)), f"{i:05d}.png"), label=int(y),
                  classname=CLASSNAMES[int(y)])
            for i, y in enumerate(labels)
        ]

    @staticmethod
    def materialize(items, images):
        """Write the PNG of every item not yet on disk (index = file name); atomic so a crash leaves no half file."""
        from PIL import Image

        todo = [item for item in items if not os.path.exists(item.impath)]
        if todo:
            logger.info("FashionMNIST: writing %d PNG images", len(todo))
        try:
            for item in todo:
                index = int(os.path.splitext(os.path.basename(item.impath))[0])
                os.makedirs(os.path.dirname(item.impath), exist_ok=True)
                tmp = item.impath + ".tmp"
                Image.fromarray(np.ascontiguousarray(images[index])).save(tmp, format="PNG")
                os.replace(tmp, item.impath)
        except OSError as e:
            raise DataError(f"FashionMNIST: cannot write the image cache under {os.path.dirname(todo[0].impath)} ({e}); point DATASET.ROOT at a writable folder.") from e


def first_per_class(items, n):
    """The first ``n`` items of each label, in the original order (a deterministic test subset)."""
    seen = {}
    out = []
    for item in items:
        if seen.get(item.label, 0) < n:
            seen[item.label] = seen.get(item.label, 0) + 1
            out.append(item)
    return out
