"""EuroSAT (10 land-use classes) in CoOp's layout: ``eurosat/2750/<Class>/`` + split_zhou_EuroSAT.json."""
import os

from engine.data.datasets import DATASET_REGISTRY, DatasetBase

from .utils import (apply_protocol, dataset_root, load_or_generate_split, read_and_split_data, require_dataset_dir,
                    require_path)

# CoOp's readable names: prompts are built from these, not from the folder names.
NEW_CNAMES = {
    "AnnualCrop": "Annual Crop Land",
    "Forest": "Forest",
    "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings",
    "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land",
    "Residential": "Residential Buildings",
    "River": "River",
    "SeaLake": "Sea or Lake",
}


@DATASET_REGISTRY.register()
class EuroSAT(DatasetBase):
    """Without the split file: each class folder split 50/20/30 and renamed with ``NEW_CNAMES``."""

    dataset_dir = "eurosat"

    def __init__(self, cfg):
        root = dataset_root(cfg)
        self.dataset_dir = require_dataset_dir(os.path.join(root, self.dataset_dir), "EuroSAT", "eurosat")
        self.image_dir = require_path(os.path.join(self.dataset_dir, "2750"), "EuroSAT", "image folder")
        self.split_path = os.path.join(self.dataset_dir, "split_zhou_EuroSAT.json")
        train, val, test = load_or_generate_split(
            self.split_path, self.image_dir,
            lambda: read_and_split_data(self.image_dir, new_cnames=NEW_CNAMES, dataset="EuroSAT"), "EuroSAT")
        train, val, test = apply_protocol(self, cfg, train, val, test)
        super().__init__(train_x=train, val=val, test=test)
