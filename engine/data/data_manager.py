"""`DataManager` (Dassl's API): dataset -> transforms -> loaders, with reproducible augmentation.

Two choices make a run repeatable and let the feature cache replay it exactly:
- the train sampler draws epoch ``e``'s order from a generator seeded by (SEED, e), so a
  resumed run sees the same batches as an uninterrupted one;
- the random augmentation of image ``i`` in epoch ``e`` is seeded by (SEED, image path relative
  to DATASET.ROOT, view), with view = e (end-to-end) or e mod V (cached), so the cached views are
  the very images the end-to-end loop would see, seeds get different augmentations, and moving
  the data folder changes nothing.
"""
import hashlib
import logging
import os
import random

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..utils.tools import read_image
from .datasets import build_dataset
from .transforms import build_transform

logger = logging.getLogger(__name__)


def relative_impath(impath, root):
    """``impath`` relative to the data root, with '/' separators (absolute when no root is given)."""
    path = os.path.abspath(impath)
    if root:
        path = os.path.relpath(path, os.path.abspath(os.path.expanduser(root)))
    return path.replace(os.sep, "/")


def view_seed(impath, view, seed=0, root=""):
    """The augmentation seed of one view of one image in a run seeded by ``seed``.

    Independent of worker and order (so resume and the feature cache are exact) and of where the
    data folder lives (the path is taken relative to ``root``, DATASET.ROOT); the run's seed takes
    part so that seeds see different augmentations, as in Dassl. Unseeded runs (seed <= 0) use 0.
    """
    seed = int(seed) if seed is not None and seed > 0 else 0
    digest = hashlib.sha1(f"{seed}|{relative_impath(impath, root)}|{view}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def epoch_generator(seed, epoch):
    """A torch generator for epoch ``epoch`` of a run seeded by ``seed`` (unseeded when seed <= 0)."""
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + epoch) if seed is not None and seed > 0 else random.getrandbits(62))
    return g


class EpochSampler(Sampler):
    """A random sampler whose order is a function of (seed, epoch); yields (index, view) keys.

    ``views`` = 0 means "view = epoch" (end-to-end); otherwise view = epoch mod views.
    """

    def __init__(self, num_items, seed, shuffle=True, views=0):
        self.num_items = num_items
        self.seed = seed
        self.shuffle = shuffle
        self.views = views
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def view(self):
        return self.epoch % self.views if self.views else self.epoch

    def order(self):
        if not self.shuffle:
            return list(range(self.num_items))
        return torch.randperm(self.num_items, generator=epoch_generator(self.seed, self.epoch)).tolist()

    def __iter__(self):
        view = self.view()
        return iter([(i, view) for i in self.order()])

    def __len__(self):
        return self.num_items


class DatasetWrapper(Dataset):
    """Items -> Dassl batch dicts (img, label, domain, impath, index); keys are int or (index, view).

    ``root`` and ``seed`` (DATASET.ROOT, SEED) seed each training view, see ``view_seed``.
    """

    def __init__(self, data_source, transform, is_train, root="", seed=0):
        self.data_source = data_source
        self.transform = transform
        self.is_train = is_train
        self.root = root
        self.seed = seed

    def __len__(self):
        return len(self.data_source)

    def __getitem__(self, key):
        index, view = key if isinstance(key, tuple) else (key, 0)
        item = self.data_source[index]
        img = read_image(item.impath)
        if self.is_train:  # the random crop/flip of (image, view) is fixed by its seed
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(view_seed(item.impath, view, self.seed, self.root))
                img = self.transform(img)
        else:
            img = self.transform(img)
        return {"img": img, "label": item.label, "domain": item.domain, "impath": item.impath, "index": index}


def build_data_loader(data_source, batch_size, transform, is_train, num_workers, seed=-1, pin_memory=False, root=""):
    """Train: seeded random order, drop_last when there is at least one full batch; test: sequential."""
    sampler = EpochSampler(len(data_source), seed, shuffle=is_train)
    return DataLoader(
        DatasetWrapper(data_source, transform, is_train, root=root, seed=seed),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=is_train and len(data_source) >= batch_size,
        pin_memory=pin_memory,
        persistent_workers=False,
    )


class DataManager:
    """Builds the dataset and its loaders: ``train_loader_x``, ``val_loader``, ``test_loader``."""

    def __init__(self, cfg, custom_tfm_train=None, custom_tfm_test=None, dataset_wrapper=None):
        self.dataset = build_dataset(cfg)
        self.tfm_train = custom_tfm_train or build_transform(cfg, is_train=True)
        self.tfm_test = custom_tfm_test or build_transform(cfg, is_train=False)
        pin = torch.cuda.is_available() and cfg.USE_CUDA
        workers = cfg.DATALOADER.NUM_WORKERS
        self.train_loader_x = build_data_loader(
            self.dataset.train_x, cfg.DATALOADER.TRAIN_X.BATCH_SIZE, self.tfm_train, True, workers, cfg.SEED, pin, cfg.DATASET.ROOT)
        self.train_loader_u = None
        self.val_loader = None
        if self.dataset.val:
            self.val_loader = build_data_loader(
                self.dataset.val, cfg.DATALOADER.TEST.BATCH_SIZE, self.tfm_test, False, workers, cfg.SEED, pin)
        self.test_loader = build_data_loader(
            self.dataset.test, cfg.DATALOADER.TEST.BATCH_SIZE, self.tfm_test, False, workers, cfg.SEED, pin)
        self._num_classes = self.dataset.num_classes
        self._num_source_domains = len(cfg.DATASET.SOURCE_DOMAINS)
        self._lab2cname = self.dataset.lab2cname
        if cfg.VERBOSE:
            self.show_dataset_summary(cfg)

    num_classes = property(lambda self: self._num_classes)
    num_source_domains = property(lambda self: self._num_source_domains)
    lab2cname = property(lambda self: self._lab2cname)

    def show_dataset_summary(self, cfg):
        rows = [("Dataset", cfg.DATASET.NAME), ("# classes", f"{self.num_classes:,}"),
                ("# train_x", f"{len(self.dataset.train_x):,}")]
        if self.dataset.val:
            rows.append(("# val", f"{len(self.dataset.val):,}"))
        rows.append(("# test", f"{len(self.dataset.test):,}"))
        width = max(len(k) for k, _ in rows)
        logger.info("-" * (width + 20))
        for k, v in rows:
            logger.info("%s  %s", k.ljust(width), v)
        logger.info("-" * (width + 20))
