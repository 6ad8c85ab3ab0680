"""Stanford Cars (196 models) in CoOp's layout: ``stanford_cars/{cars_train,cars_test,devkit}`` + split_zhou_StanfordCars.json."""
import os

from engine.data.datasets import DATASET_REGISTRY, Datum, DatasetBase
from engine.errors import DataError

from .utils import apply_protocol, dataset_root, load_or_generate_split, require_dataset_dir, split_trainval


def readable_carname(name):
    """CoOp moves the year to the front: "AM General Hummer SUV 2000" -> "2000 AM General Hummer SUV"."""
    words = name.split(" ")
    return " ".join([words[-1]] + words[:-1])


@DATASET_REGISTRY.register()
class StanfordCars(DatasetBase):
    """Split paths are relative to ``stanford_cars/`` itself. Without the split file: the devkit's train
    annotations split 80/20 into train/val, ``cars_test_annos_withlabels.mat`` is test."""

    dataset_dir = "stanford_cars"

    def __init__(self, cfg):
        root = dataset_root(cfg)
        self.dataset_dir = require_dataset_dir(os.path.join(root, self.dataset_dir), "StanfordCars", "stanford_cars")
        self.split_path = os.path.join(self.dataset_dir, "split_zhou_StanfordCars.json")
        trainval_file = os.path.join(self.dataset_dir, "devkit", "cars_train_annos.mat")
        test_file = os.path.join(self.dataset_dir, "cars_test_annos_withlabels.mat")
        meta_file = os.path.join(self.dataset_dir, "devkit", "cars_meta.mat")

        def generate():
            trainval = self.read_data("cars_train", trainval_file, meta_file)
            test = self.read_data("cars_test", test_file, meta_file)
            train, val = split_trainval(trainval, dataset="StanfordCars")
            return train, val, test

        sources = [(trainval_file, "train annotations"), (test_file, "test annotations"), (meta_file, "class-name file")]
        train, val, test = load_or_generate_split(self.split_path, self.dataset_dir, generate, "StanfordCars", sources)
        train, val, test = apply_protocol(self, cfg, train, val, test)
        super().__init__(train_x=train, val=val, test=test)

    def read_data(self, image_dir, anno_file, meta_file):
        from scipy.io import loadmat

        try:
            annos = loadmat(anno_file)["annotations"][0]
            class_names = loadmat(meta_file)["class_names"][0]
            items = []
            for anno in annos:
                label = int(anno["class"][0, 0]) - 1  # 1-based in the devkit
                classname = readable_carname(str(class_names[label][0]))
                impath = os.path.join(self.dataset_dir, image_dir, str(anno["fname"][0]))
                items.append(Datum(impath=impath, label=label, classname=classname))
        except (KeyError, IndexError, ValueError, OSError) as e:
            raise DataError(
                f"StanfordCars: cannot read annotations from {anno_file} / {meta_file} ({e}); re-download the devkit "
                "and cars_test_annos_withlabels.mat."
            ) from e
        return items
