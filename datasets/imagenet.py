"""ImageNet in CoOp's layout: ``imagenet/images/{train,val}/<wnid>/`` + ``imagenet/classnames.txt``.

Class folders are sorted (labels follow that order) but each folder's images are kept in
``os.listdir`` order, as CoOp lists them: the few-shot draw ``random.sample`` picks by position,
so sorting would pick other images than CoOp on the same folder. That order is filesystem-
dependent (a copy of the folder may list differently), which is why CoOp caches the lists in
``imagenet/preprocessed.pkl``: when that file is present it is read (restricted unpickler,
paths rebased onto DATASET.ROOT when the data moved) so a user's earlier lists, and therefore
draws, are reused. The helpers here are shared by the ImageNet test-only variants.
"""
import logging
import os

from engine.data.dassl_pickle import read_dassl_pickle, rebase_items
from engine.data.datasets import DATASET_REGISTRY, Datum, DatasetBase
from engine.errors import DataError

from .utils import apply_protocol, dataset_root, doc_ref, list_images, list_subdirs, read_classnames, require_dataset_dir, require_path

logger = logging.getLogger(__name__)


def find_classnames_file(dataset_dir, root, dataset):
    """``<dataset_dir>/classnames.txt`` (CoOp asks users to copy it there), else ImageNet's own copy."""
    own = os.path.join(dataset_dir, "classnames.txt")
    shared = os.path.join(root, "imagenet", "classnames.txt")
    for path in (own, shared):
        if os.path.exists(path):
            return path
    raise DataError(
        f"{dataset}: classnames.txt not found at {own} or {shared}; download it "
        f"(`python -m datasets.download --root DATA --dataset ImageNet`) or copy it there, see {doc_ref(dataset)}."
    )


def read_wnid_folders(image_dir, classnames, dataset, folders=None):
    """Items of ``image_dir/<wnid>/<images>``, labelled by the sorted folder order (CoOp's rule).

    Images inside a folder stay in ``os.listdir`` order, as CoOp's ``listdir_nohidden`` gives them.
    """
    folders = list_subdirs(image_dir) if folders is None else folders
    if not folders:
        raise DataError(f"{dataset}: no class folders in {image_dir}; see {doc_ref(dataset)}.")
    unknown = [f for f in folders if f not in classnames]
    if unknown:
        raise DataError(
            f"{dataset}: {len(unknown)} folders of {image_dir} are not WordNet ids listed in classnames.txt "
            f"({', '.join(unknown[:5])}); remove them or use ImageNet's classnames.txt."
        )
    items = []
    for label, folder in enumerate(folders):
        folder_path = os.path.join(image_dir, folder)
        items.extend(Datum(impath=os.path.join(folder_path, name), label=label, classname=classnames[folder])
                     for name in list_images(folder_path, sort=False))
    if not items:
        raise DataError(f"{dataset}: the class folders of {image_dir} hold no images; see {doc_ref(dataset)}.")
    return items, folders


@DATASET_REGISTRY.register()
class ImageNet(DatasetBase):
    """Train from ``images/train``; ``images/val`` is both val and test (CoOp): only train is few-shot sampled."""

    dataset_dir = "imagenet"

    def __init__(self, cfg):
        root = dataset_root(cfg)
        self.dataset_dir = require_dataset_dir(os.path.join(root, self.dataset_dir), "ImageNet", "imagenet")
        self.preprocessed = os.path.join(self.dataset_dir, "preprocessed.pkl")
        if os.path.exists(self.preprocessed):  # CoOp's cached lists: their order fixes the few-shot draw
            data = read_dassl_pickle(self.preprocessed, ["train", "test"])
            train = rebase_items(data["train"], self.dataset_dir, self.preprocessed, check="first_per_label")
            test = rebase_items(data["test"], self.dataset_dir, self.preprocessed, check="first_per_label")
            logger.info("ImageNet: read the train/test lists from CoOp's %s", self.preprocessed)
        else:
            train, test = self.read_folders()
        train, val, test = apply_protocol(self, cfg, train, None, test, fewshot_val=False)
        super().__init__(train_x=train, val=val, test=test)

    def read_folders(self):
        self.image_dir = require_path(os.path.join(self.dataset_dir, "images"), "ImageNet", "image folder")
        classnames = read_classnames(
            require_path(os.path.join(self.dataset_dir, "classnames.txt"), "ImageNet", "classnames.txt",
                         hint="download it with `python -m datasets.download --root DATA --dataset ImageNet`;"),
            "ImageNet")
        train_dir = require_path(os.path.join(self.image_dir, "train"), "ImageNet", "train folder")
        val_dir = require_path(os.path.join(self.image_dir, "val"), "ImageNet", "val folder")
        train, train_folders = read_wnid_folders(train_dir, classnames, "ImageNet")
        val_folders = list_subdirs(val_dir)
        if val_folders != train_folders:
            raise DataError(
                f"ImageNet: {val_dir} and {train_dir} must hold the same class folders (labels follow their sorted "
                f"order), got {len(val_folders)} and {len(train_folders)}; see {doc_ref('ImageNet')}."
            )
        test, _ = read_wnid_folders(val_dir, classnames, "ImageNet", folders=val_folders)
        return train, test
