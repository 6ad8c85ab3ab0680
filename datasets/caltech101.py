"""Caltech-101 in CoOp's layout: ``caltech-101/101_ObjectCategories/<class>/`` + split_zhou_Caltech101.json."""
import os

from engine.data.datasets import DATASET_REGISTRY, DatasetBase

from .utils import (apply_protocol, dataset_root, load_or_generate_split, read_and_split_data, require_dataset_dir,
                    require_path)

IGNORED = ("BACKGROUND_Google", "Faces_easy")  # CoOp drops these: 100 classes remain
NEW_CNAMES = {
    "airplanes": "airplane",
    "Faces": "face",
    "Leopards": "leopard",
    "Motorbikes": "motorbike",
}


@DATASET_REGISTRY.register()
class Caltech101(DatasetBase):
    """Without the split file: 50/20/30 per class folder, ``IGNORED`` dropped, ``NEW_CNAMES`` applied."""

    dataset_dir = "caltech-101"

    def __init__(self, cfg):
        root = dataset_root(cfg)
        self.dataset_dir = require_dataset_dir(os.path.join(root, self.dataset_dir), "Caltech101", "caltech-101")
        self.image_dir = require_path(os.path.join(self.dataset_dir, "101_ObjectCategories"), "Caltech101", "image folder")
        self.split_path = os.path.join(self.dataset_dir, "split_zhou_Caltech101.json")
        train, val, test = load_or_generate_split(
            self.split_path, self.image_dir,
            lambda: read_and_split_data(self.image_dir, ignored=IGNORED, new_cnames=NEW_CNAMES, dataset="Caltech101"),
            "Caltech101")
        train, val, test = apply_protocol(self, cfg, train, val, test)
        super().__init__(train_x=train, val=val, test=test)
