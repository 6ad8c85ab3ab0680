"""FGVC-Aircraft (100 variants) in CoOp's layout: ``fgvc_aircraft/images`` and the dataset's own txt splits."""
import os

from engine.data.datasets import DATASET_REGISTRY, Datum, DatasetBase
from engine.errors import DataError

from .utils import apply_protocol, check_images_exist, dataset_root, require_dataset_dir, require_path


@DATASET_REGISTRY.register()
class FGVCAircraft(DatasetBase):
    """Labels follow ``variants.txt`` line order; splits are ``images_variant_{train,val,test}.txt``."""

    dataset_dir = "fgvc_aircraft"

    def __init__(self, cfg):
        root = dataset_root(cfg)
        self.dataset_dir = require_dataset_dir(os.path.join(root, self.dataset_dir), "FGVCAircraft", "fgvc_aircraft")
        self.image_dir = require_path(os.path.join(self.dataset_dir, "images"), "FGVCAircraft", "image folder")
        variants = require_path(os.path.join(self.dataset_dir, "variants.txt"), "FGVCAircraft", "class list")
        with open(variants) as f:
            classnames = [line.strip() for line in f if line.strip()]
        cname2lab = {c: i for i, c in enumerate(classnames)}
        train, val, test = (self.read_data(cname2lab, f"images_variant_{s}.txt") for s in ("train", "val", "test"))
        train, val, test = apply_protocol(self, cfg, train, val, test)
        super().__init__(train_x=train, val=val, test=test)

    def read_data(self, cname2lab, split_file):
        """``<image id> <variant name>`` per line (variant names may hold spaces)."""
        filepath = require_path(os.path.join(self.dataset_dir, split_file), "FGVCAircraft", "split file")
        items = []
        with open(filepath) as f:
            for line in f:
                parts = line.strip().split(" ")
                if not parts[0]:
                    continue
                classname = " ".join(parts[1:])
                if classname not in cname2lab:
                    raise DataError(
                        f'FGVCAircraft: variant "{classname}" in {filepath} is not listed in variants.txt; '
                        "re-extract the dataset's data/ folder."
                    )
                impath = os.path.join(self.image_dir, parts[0] + ".jpg")
                items.append(Datum(impath=impath, label=cname2lab[classname], classname=classname))
        check_images_exist(items, filepath, "FGVCAircraft")
        return items
