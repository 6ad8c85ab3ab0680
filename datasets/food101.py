"""Food-101 in CoOp's layout: ``food-101/images/<class>/`` + split_zhou_Food101.json."""
import os

from engine.data.datasets import DATASET_REGISTRY, DatasetBase

from .utils import (apply_protocol, dataset_root, load_or_generate_split, read_and_split_data, require_dataset_dir,
                    require_path)


@DATASET_REGISTRY.register()
class Food101(DatasetBase):
    """Without the split file: each class folder split 50/20/30; class names are the folder names."""

    dataset_dir = "food-101"

    def __init__(self, cfg):
        root = dataset_root(cfg)
        self.dataset_dir = require_dataset_dir(os.path.join(root, self.dataset_dir), "Food101", "food-101")
        self.image_dir = require_path(os.path.join(self.dataset_dir, "images"), "Food101", "image folder")
        self.split_path = os.path.join(self.dataset_dir, "split_zhou_Food101.json")
        train, val, test = load_or_generate_split(
            self.split_path, self.image_dir, lambda: read_and_split_data(self.image_dir, dataset="Food101"), "Food101")
        train, val, test = apply_protocol(self, cfg, train, val, test)
        super().__init__(train_x=train, val=val, test=test)
