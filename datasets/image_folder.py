"""Any ``<root>/<class>/<images>`` tree as a dataset, with an optional split json beside the classes."""
import os

from engine.data.datasets import DATASET_REGISTRY, DatasetBase
from engine.errors import DataError

from .utils import apply_protocol, dataset_root, load_or_generate_split, read_and_split_data

SPLIT_FILE = "split_ImageFolder.json"
NOT_CLASSES = ("split_fewshot",)  # folders this code writes next to the class folders


@DATASET_REGISTRY.register()
class ImageFolder(DatasetBase):
    """``DATASET.ROOT`` is the tree itself. Labels follow the sorted class-folder names, which are also the
    class names (write them as the prompts should read). Without ``split_ImageFolder.json`` each class
    is split 50/20/30 (CoOp's ``read_and_split_data``; a class needs at least 4 images) and the split is
    written there once."""

    dataset_dir = ""

    def __init__(self, cfg):
        self.dataset_dir = dataset_root(cfg)
        if not os.path.isdir(self.dataset_dir):
            raise DataError(
                f"ImageFolder: folder {self.dataset_dir} not found; set DATASET.ROOT (--root) to a folder holding "
                "one sub-folder of images per class, see DATASETS.md#imagefolder."
            )
        self.split_path = os.path.join(self.dataset_dir, SPLIT_FILE)
        train, val, test = load_or_generate_split(
            self.split_path, self.dataset_dir,
            lambda: read_and_split_data(self.dataset_dir, ignored=NOT_CLASSES, dataset="ImageFolder"), "ImageFolder")
        train, val, test = apply_protocol(self, cfg, train, val, test)
        super().__init__(train_x=train, val=val, test=test)
