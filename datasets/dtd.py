"""Describable Textures (47 classes) in CoOp's layout: ``dtd/images/<class>/`` + split_zhou_DescribableTextures.json."""
import os

from engine.data.datasets import DATASET_REGISTRY, DatasetBase

from .utils import (apply_protocol, dataset_root, load_or_generate_split, read_and_split_data, require_dataset_dir,
                    require_path)


@DATASET_REGISTRY.register()
class DescribableTextures(DatasetBase):
    """Without the split file: each class folder split 50/20/30 (CoOp's ``read_and_split_data``)."""

    dataset_dir = "dtd"

    def __init__(self, cfg):
        root = dataset_root(cfg)
        name = "DescribableTextures"
        self.dataset_dir = require_dataset_dir(os.path.join(root, self.dataset_dir), name, "dtd")
        self.image_dir = require_path(os.path.join(self.dataset_dir, "images"), name, "image folder")
        self.split_path = os.path.join(self.dataset_dir, "split_zhou_DescribableTextures.json")
        train, val, test = load_or_generate_split(
            self.split_path, self.image_dir, lambda: read_and_split_data(self.image_dir, dataset=name), name)
        train, val, test = apply_protocol(self, cfg, train, val, test)
        super().__init__(train_x=train, val=val, test=test)
