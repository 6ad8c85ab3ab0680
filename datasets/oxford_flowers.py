"""Oxford Flowers-102 in CoOp's layout: ``oxford_flowers/jpg``, ``imagelabels.mat``, ``cat_to_name.json``."""
import os

from engine.data.datasets import DATASET_REGISTRY, DatasetBase
from engine.errors import DataError

from .utils import (apply_protocol, dataset_root, load_or_generate_split, read_json, require_dataset_dir,
                    require_path, split_three_ways)


@DATASET_REGISTRY.register()
class OxfordFlowers(DatasetBase):
    """Without the split file: each class split 50/20/30, classes in the order they first appear in
    ``imagelabels.mat`` (CoOp's tracker order); names from ``cat_to_name.json`` ("1" -> "pink primrose")."""

    dataset_dir = "oxford_flowers"

    def __init__(self, cfg):
        root = dataset_root(cfg)
        self.dataset_dir = require_dataset_dir(os.path.join(root, self.dataset_dir), "OxfordFlowers", "oxford_flowers")
        self.image_dir = require_path(os.path.join(self.dataset_dir, "jpg"), "OxfordFlowers", "image folder")
        self.label_file = os.path.join(self.dataset_dir, "imagelabels.mat")
        self.lab2cname_file = os.path.join(self.dataset_dir, "cat_to_name.json")
        self.split_path = os.path.join(self.dataset_dir, "split_zhou_OxfordFlowers.json")
        sources = [(self.label_file, "label file"), (self.lab2cname_file, "class-name file")]
        train, val, test = load_or_generate_split(self.split_path, self.image_dir, self.read_data, "OxfordFlowers", sources)
        train, val, test = apply_protocol(self, cfg, train, val, test)
        super().__init__(train_x=train, val=val, test=test)

    def read_data(self):
        from scipy.io import loadmat

        try:
            labels = loadmat(self.label_file)["labels"][0]
        except (KeyError, IndexError, ValueError, OSError) as e:
            raise DataError(f"OxfordFlowers: cannot read a 'labels' array from {self.label_file} ({e}); re-download imagelabels.mat.") from e
        lab2cname = read_json(self.lab2cname_file, "OxfordFlowers")
        tracker = {}
        for i, label in enumerate(labels):
            impath = os.path.join(self.image_dir, f"image_{i + 1:05d}.jpg")
            tracker.setdefault(int(label), []).append(impath)
        groups = []
        for label, impaths in tracker.items():
            if str(label) not in lab2cname:
                raise DataError(f'OxfordFlowers: class {label} has no name in {self.lab2cname_file}; re-download cat_to_name.json.')
            groups.append((label - 1, lab2cname[str(label)], impaths))
        return split_three_ways(groups, 0.5, 0.2, dataset="OxfordFlowers")
