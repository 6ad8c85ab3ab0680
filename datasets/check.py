"""Load one dataset from its folder and print its class and split counts.

    python -m datasets.check --root DATA --dataset OxfordPets [--num-shots 16 --seed 1 --subsample base --verify-images]
    python -m datasets.check --root DATA --dataset Elevater --elevater-name cifar-10
"""
import argparse
import logging
import sys

from engine.config import get_cfg_default
from engine.data.datasets import DATASET_REGISTRY, build_dataset
from engine.errors import UserError

import datasets  # noqa: F401  (registers every dataset)

from .utils import verify_images


def summarize(dataset, name):
    """One line per fact, as printed by the check command."""
    val = dataset.val or []
    lines = [
        f"dataset: {name}",
        f"classes: {dataset.num_classes}",
        f"train: {len(dataset.train_x or [])}",
        f"val: {len(val)}",
        f"test: {len(dataset.test or [])}",
        "first classes: " + ", ".join(dataset.classnames[:5]),
    ]
    indices = getattr(dataset, "class_indices_in_imagenet", None)
    if indices is not None:
        lines.append(f"ImageNet rows: {len(indices)} ({', '.join(map(str, indices[:5]))}, ...)")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Load a dataset and print its class and split counts.")
    parser.add_argument("--root", required=True, help="DATASET.ROOT: the folder holding the dataset folders")
    parser.add_argument("--dataset", required=True, help="dataset class name, one of: " + ", ".join(DATASET_REGISTRY.registered_names()))
    parser.add_argument("--num-shots", type=int, default=-1, help="DATASET.NUM_SHOTS (default: all images)")
    parser.add_argument("--seed", type=int, default=1, help="SEED for the few-shot sample")
    parser.add_argument("--subsample", default="all", choices=["all", "base", "new"], help="DATASET.SUBSAMPLE_CLASSES")
    parser.add_argument("--elevater-name", default="", help="DATASET.ELEVATER_NAME, with --dataset Elevater (e.g. cifar-10)")
    parser.add_argument("--verify-images", action="store_true", help="also open every image")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

    cfg = get_cfg_default()
    cfg.DATASET.ROOT = args.root
    cfg.DATASET.NAME = args.dataset
    cfg.DATASET.NUM_SHOTS = args.num_shots
    cfg.DATASET.NUM_SAMPLES_PER_CLASS = args.num_shots  # Elevater's (MVLPT's --shots sets both)
    cfg.DATASET.SUBSAMPLE_CLASSES = args.subsample
    cfg.DATASET.ELEVATER_NAME = args.elevater_name
    cfg.SEED = args.seed
    try:
        dataset = build_dataset(cfg)
        if args.verify_images:
            items = (dataset.train_x or []) + (dataset.val or []) + (dataset.test or [])
            verify_images(list({item.impath: item for item in items}.values()), args.dataset)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(summarize(dataset, args.dataset))
    return 0


if __name__ == "__main__":
    sys.exit(main())

