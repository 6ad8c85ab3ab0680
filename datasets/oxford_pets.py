"""Oxford-IIIT Pets (37 breeds) in CoOp's layout: ``oxford_pets/{images,annotations}`` + split_zhou_OxfordPets.json."""
import os

from engine.data.datasets import DATASET_REGISTRY, Datum, DatasetBase

from .utils import (apply_protocol, dataset_root, load_or_generate_split, malformed_line, require_dataset_dir,
                    require_path, split_trainval)


@DATASET_REGISTRY.register()
class OxfordPets(DatasetBase):
    """Without the split file: ``annotations/trainval.txt`` split 80/20 into train/val, ``test.txt`` is test.

    Class names are the image-name prefix lower-cased (``Abyssinian_100`` -> ``abyssinian``), as in CoOp.
    """

    dataset_dir = "oxford_pets"

    def __init__(self, cfg):
        root = dataset_root(cfg)
        self.dataset_dir = require_dataset_dir(os.path.join(root, self.dataset_dir), "OxfordPets", "oxford_pets")
        self.image_dir = require_path(os.path.join(self.dataset_dir, "images"), "OxfordPets", "image folder")
        self.anno_dir = os.path.join(self.dataset_dir, "annotations")
        self.split_path = os.path.join(self.dataset_dir, "split_zhou_OxfordPets.json")

        def generate():
            trainval = self.read_data("trainval.txt")
            test = self.read_data("test.txt")
            train, val = split_trainval(trainval, dataset="OxfordPets")
            return train, val, test

        sources = [(os.path.join(self.anno_dir, f), "annotation file") for f in ("trainval.txt", "test.txt")]
        train, val, test = load_or_generate_split(self.split_path, self.image_dir, generate, "OxfordPets", sources)
        train, val, test = apply_protocol(self, cfg, train, val, test)
        super().__init__(train_x=train, val=val, test=test)

    def read_data(self, split_file):
        """``<image name> <class id> <species> <breed id>`` per line; the class id is 1-based."""
        filepath = os.path.join(self.anno_dir, split_file)
        items = []
        with open(filepath) as f:
            for lineno, line in enumerate(f, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                try:
                    imname, label, _species, _breed_id = line.split(" ")
                    label = int(label) - 1
                except ValueError:
                    raise malformed_line("OxfordPets", filepath, lineno, line,
                                         "'<image> <class id> <species> <breed id>'") from None
                breed = "_".join(imname.split("_")[:-1]).lower()
                items.append(Datum(impath=os.path.join(self.image_dir, imname + ".jpg"), label=label, classname=breed))
        return items
