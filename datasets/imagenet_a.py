"""ImageNet-A (200 of ImageNet's classes), test only: ``imagenet-adversarial/imagenet-a/<wnid>/``."""
import os

from engine.data.datasets import DATASET_REGISTRY, DatasetBase

from .imagenet import find_classnames_file, read_wnid_folders
from .utils import dataset_root, read_classnames, require_dataset_dir, require_path


class ImageNetSubset(DatasetBase):
    """A test-only dataset holding a subset of ImageNet's wnids (ImageNet-A, ImageNet-R).

    ``class_indices_in_imagenet[i]`` is the row of label ``i`` in a 1000-class ImageNet classifier
    (its position in ``classnames.txt``), derived from the folders present, so an ImageNet-trained
    model evaluates here by selecting those rows.
    """

    dataset_dir = ""
    image_subdir = ""

    def __init__(self, cfg):
        name = type(self).__name__
        root = dataset_root(cfg)
        self.dataset_dir = require_dataset_dir(os.path.join(root, self.dataset_dir), name, self.dataset_dir)
        self.image_dir = require_path(os.path.join(self.dataset_dir, self.image_subdir), name, "image folder")
        classnames = read_classnames(find_classnames_file(self.dataset_dir, root, name), name)
        data, folders = read_wnid_folders(self.image_dir, classnames, name)  # README.txt is not a folder: skipped
        order = {wnid: i for i, wnid in enumerate(classnames)}
        self.class_indices_in_imagenet = [order[wnid] for wnid in folders]
        super().__init__(train_x=data, test=data)


@DATASET_REGISTRY.register()
class ImageNetA(ImageNetSubset):
    dataset_dir = "imagenet-adversarial"
    image_subdir = "imagenet-a"
