"""ImageNetV2 (matched frequency), test only: ``imagenetv2/imagenetv2-matched-frequency-format-val/{0..999}/``."""
import os

from engine.data.datasets import DATASET_REGISTRY, Datum, DatasetBase
from engine.errors import DataError

from .imagenet import find_classnames_file
from .utils import dataset_root, doc_ref, list_images, read_classnames, require_dataset_dir, require_path


@DATASET_REGISTRY.register()
class ImageNetV2(DatasetBase):
    """Folder ``i`` holds class ``i`` of ``classnames.txt``; train_x = test (CoOp), no few-shot sampling."""

    dataset_dir = "imagenetv2"

    def __init__(self, cfg):
        root = dataset_root(cfg)
        self.dataset_dir = require_dataset_dir(os.path.join(root, self.dataset_dir), "ImageNetV2", "imagenetv2")
        self.image_dir = require_path(
            os.path.join(self.dataset_dir, "imagenetv2-matched-frequency-format-val"), "ImageNetV2", "image folder")
        classnames = read_classnames(find_classnames_file(self.dataset_dir, root, "ImageNetV2"), "ImageNetV2")
        data = self.read_data(classnames)
        super().__init__(train_x=data, test=data)

    def read_data(self, classnames):
        items = []
        for label, wnid in enumerate(classnames):
            class_dir = os.path.join(self.image_dir, str(label))
            if not os.path.isdir(class_dir):
                raise DataError(
                    f"ImageNetV2: class folder {class_dir} is missing (one folder per line of classnames.txt, "
                    f"named 0..{len(classnames) - 1}); see {doc_ref('ImageNetV2')}."
                )
            items.extend(Datum(impath=os.path.join(class_dir, name), label=label, classname=classnames[wnid])
                         for name in list_images(class_dir, sort=False))  # CoOp's listing order
        return items
