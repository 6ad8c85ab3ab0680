"""ImageNet-Sketch, test only: ``imagenet-sketch/images/<wnid>/`` (1000 classes)."""
import os

from engine.data.datasets import DATASET_REGISTRY, DatasetBase

from .imagenet import find_classnames_file, read_wnid_folders
from .utils import dataset_root, read_classnames, require_dataset_dir, require_path


@DATASET_REGISTRY.register()
class ImageNetSketch(DatasetBase):
    """Labels follow the sorted wnid folders (= ImageNet's order); train_x = test (CoOp)."""

    dataset_dir = "imagenet-sketch"

    def __init__(self, cfg):
        root = dataset_root(cfg)
        self.dataset_dir = require_dataset_dir(os.path.join(root, self.dataset_dir), "ImageNetSketch", "imagenet-sketch")
        self.image_dir = require_path(os.path.join(self.dataset_dir, "images"), "ImageNetSketch", "image folder")
        classnames = read_classnames(find_classnames_file(self.dataset_dir, root, "ImageNetSketch"), "ImageNetSketch")
        data, _ = read_wnid_folders(self.image_dir, classnames, "ImageNetSketch")
        super().__init__(train_x=data, test=data)
