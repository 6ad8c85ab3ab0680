"""UCF101 middle frames in CoOp's layout: ``ucf101/UCF-101-midframes/<Action_Name>/`` + split_zhou_UCF101.json."""
import os
import re

from engine.data.datasets import DATASET_REGISTRY, Datum, DatasetBase
from engine.errors import DataError

from .utils import (apply_protocol, dataset_root, load_or_generate_split, malformed_line, require_dataset_dir,
                    require_path, split_trainval)


def split_camel_case(action):
    """CoOp's folder/class name: "ApplyEyeMakeup" -> "Apply_Eye_Makeup" (words start at capitals)."""
    return "_".join(re.findall("[A-Z][^A-Z]*", action))


@DATASET_REGISTRY.register()
class UCF101(DatasetBase):
    """Without the split file: labels from ``ucfTrainTestlist/classInd.txt``, ``trainlist01.txt`` split
    80/20 into train/val, ``testlist01.txt`` is test; ``.avi`` names become ``.jpg`` middle frames."""

    dataset_dir = "ucf101"

    def __init__(self, cfg):
        root = dataset_root(cfg)
        self.dataset_dir = require_dataset_dir(os.path.join(root, self.dataset_dir), "UCF101", "ucf101")
        self.image_dir = require_path(os.path.join(self.dataset_dir, "UCF-101-midframes"), "UCF101", "image folder")
        self.split_path = os.path.join(self.dataset_dir, "split_zhou_UCF101.json")
        list_dir = os.path.join(self.dataset_dir, "ucfTrainTestlist")

        def generate():
            cname2lab = {}
            class_file = os.path.join(list_dir, "classInd.txt")
            with open(class_file) as f:
                for lineno, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            label, action = line.strip().split(" ")
                            cname2lab[action] = int(label) - 1
                        except ValueError:
                            raise malformed_line("UCF101", class_file, lineno, line, "'<class index> <ActionName>'") from None
            trainval = self.read_data(cname2lab, os.path.join(list_dir, "trainlist01.txt"))
            test = self.read_data(cname2lab, os.path.join(list_dir, "testlist01.txt"))
            train, val = split_trainval(trainval, dataset="UCF101")
            return train, val, test

        sources = [(os.path.join(list_dir, f), "split list") for f in ("classInd.txt", "trainlist01.txt", "testlist01.txt")]
        train, val, test = load_or_generate_split(self.split_path, self.image_dir, generate, "UCF101", sources)
        train, val, test = apply_protocol(self, cfg, train, val, test)
        super().__init__(train_x=train, val=val, test=test)

    def read_data(self, cname2lab, text_file):
        """Lines ``Action/v_Action_gXX_cYY.avi [label]``."""
        items = []
        with open(text_file) as f:
            for lineno, line in enumerate(f, 1):
                entry = line.strip().split(" ")[0]
                if not entry:
                    continue
                try:
                    action, filename = entry.split("/")
                except ValueError:
                    raise malformed_line("UCF101", text_file, lineno, line, "'<Action>/<video>.avi [label]'") from None
                if action not in cname2lab:
                    raise DataError(f'UCF101: action "{action}" on line {lineno} of {text_file} is not listed in classInd.txt.')
                classname = split_camel_case(action)
                impath = os.path.join(self.image_dir, classname, filename.replace(".avi", ".jpg"))
                items.append(Datum(impath=impath, label=cname2lab[action], classname=classname))
        return items
