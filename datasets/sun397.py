"""SUN397 in CoOp's layout: ``sun397/SUN397/<letter>/<category>/...`` + split_zhou_SUN397.json."""
import os

from engine.data.datasets import DATASET_REGISTRY, Datum, DatasetBase
from engine.errors import DataError

from .utils import (apply_protocol, dataset_root, load_or_generate_split, require_dataset_dir, require_path,
                    split_trainval)


def readable_sun_name(category):
    """CoOp's name: drop the letter folder, reverse the rest ("a/apartment_building/outdoor" -> "outdoor apartment_building")."""
    return " ".join(category.split("/")[1:][::-1])


@DATASET_REGISTRY.register()
class SUN397(DatasetBase):
    """Without the split file: labels from ``ClassName.txt`` order, ``Training_01.txt`` split 80/20 into
    train/val, ``Testing_01.txt`` is test."""

    dataset_dir = "sun397"

    def __init__(self, cfg):
        root = dataset_root(cfg)
        self.dataset_dir = require_dataset_dir(os.path.join(root, self.dataset_dir), "SUN397", "sun397")
        self.image_dir = require_path(os.path.join(self.dataset_dir, "SUN397"), "SUN397", "image folder")
        self.split_path = os.path.join(self.dataset_dir, "split_zhou_SUN397.json")
        classname_file = os.path.join(self.dataset_dir, "ClassName.txt")

        def generate():
            with open(classname_file) as f:
                categories = [line.strip()[1:] for line in f if line.strip()]  # "/a/abbey" -> "a/abbey"
            cname2lab = {c: i for i, c in enumerate(categories)}
            trainval = self.read_data(cname2lab, "Training_01.txt")
            test = self.read_data(cname2lab, "Testing_01.txt")
            train, val = split_trainval(trainval, dataset="SUN397")
            return train, val, test

        sources = [(classname_file, "class list")] + [
            (os.path.join(self.dataset_dir, f), "partition file") for f in ("Training_01.txt", "Testing_01.txt")]
        train, val, test = load_or_generate_split(self.split_path, self.image_dir, generate, "SUN397", sources)
        train, val, test = apply_protocol(self, cfg, train, val, test)
        super().__init__(train_x=train, val=val, test=test)

    def read_data(self, cname2lab, text_file):
        text_file = os.path.join(self.dataset_dir, text_file)
        items = []
        with open(text_file) as f:
            for line in f:
                imname = line.strip()[1:]  # "/a/abbey/sun_x.jpg" -> "a/abbey/sun_x.jpg"
                if not imname:
                    continue
                category = os.path.dirname(imname)
                if category not in cname2lab:
                    raise DataError(f'SUN397: category "{category}" in {text_file} is not listed in ClassName.txt.')
                items.append(Datum(impath=os.path.join(self.image_dir, imname), label=cname2lab[category],
                                   classname=readable_sun_name(category)))
        return items
