"""`DataManager` (Dassl's API): dataset -> transforms -> loaders, with reproducible augmentation.

Two choices make a run repeatable and let the feature cache replay it exactly:
- the train sampler draws epoch ``e``'s order from a generator seeded by (SEED, e), so a
  resumed run sees the same batches as an uninterrupted one;
- the random augmentation of image ``i`` in epoch ``e`` is seeded by (SEED, image path relative
  to DATASET.ROOT, view), with view = e (end-to-end) or e mod V (cached), so the cached views are
  the very images the end-to-end loop would see, seeds get different augmentations, and moving
  the data folder changes nothing.
"""
import functools
import hashlib
import logging
import os
import random

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from yacs.config import CfgNode

from ..errors import ConfigError
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
    """Dassl's ``DatasetWrapper(cfg, data_source, transform=None, is_train=False)``: items -> batch dicts.

    An item is ``{img, label, domain, impath, index}`` as in Dassl; with a list of transforms
    the i-th (i > 1) goes to ``img<i>``; ``DATALOADER.K_TRANSFORMS`` > 1 makes each ``img`` a list
    of K augmentations (training only); ``DATALOADER.RETURN_IMG0`` adds ``img0``, the image resized
    to INPUT.SIZE without augmentation. Keys are ints or (index, view): the random augmentation of
    an (image, view) is seeded, so resume and the feature cache replay it exactly.
    The engine's own callers may leave out ``cfg`` (``DatasetWrapper(data_source, transform, is_train,
    root=, seed=)``); with ``cfg``, ``root`` and ``seed`` are DATASET.ROOT and SEED (see ``view_seed``).
    """

    def __init__(self, cfg, data_source=None, transform=None, is_train=False, root="", seed=0):
        if not isinstance(cfg, CfgNode):  # the short form: (data_source, transform, is_train)
            is_train = transform if isinstance(transform, bool) else is_train
            cfg, data_source, transform = None, cfg, data_source
        self.cfg = cfg
        self.root = cfg.DATASET.ROOT if cfg is not None else root
        self.seed = cfg.SEED if cfg is not None else seed
        self.data_source = data_source
        self.transform = transform
        self.is_train = is_train
        self.k_tfm = cfg.DATALOADER.K_TRANSFORMS if cfg is not None and is_train else 1
        self.return_img0 = bool(cfg is not None and cfg.DATALOADER.RETURN_IMG0)
        if self.k_tfm > 1 and transform is None:
            raise ConfigError(f"DATALOADER.K_TRANSFORMS is {self.k_tfm} but no transform was given to augment with; "
                              "set it to 1 or pass a transform.")
        self.to_tensor = self._plain_transform(cfg) if self.return_img0 else None

    @staticmethod
    def _plain_transform(cfg):
        from torchvision import transforms as T

        from .transforms import INTERPOLATION_MODES

        interpolation = INTERPOLATION_MODES[cfg.INPUT.INTERPOLATION]
        steps = [T.Resize(tuple(cfg.INPUT.SIZE), interpolation=interpolation), T.ToTensor()]
        if "normalize" in cfg.INPUT.TRANSFORMS:
            steps.append(T.Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD))
        return T.Compose(steps)

    def __len__(self):
        return len(self.data_source)

    def __getitem__(self, key):
        index, view = key if isinstance(key, tuple) else (key, 0)
        item = self.data_source[index]
        output = {"label": item.label, "domain": item.domain, "impath": item.impath, "index": index}
        img0 = read_image(item.impath)
        if self.transform is None:
            output["img"] = img0
        else:
            transforms = self.transform if isinstance(self.transform, (list, tuple)) else [self.transform]
            for i, tfm in enumerate(transforms):
                output["img" if i == 0 else f"img{i + 1}"] = self._transform_image(tfm, img0, item, view, i)
        if self.return_img0:
            output["img0"] = self.to_tensor(img0)
        return output

    def _transform_image(self, tfm, img0, item, view, tfm_index):
        if not self.is_train:
            return tfm(img0)
        imgs = []
        for k in range(self.k_tfm):
            with torch.random.fork_rng(devices=[]):  # the random crop/flip of (image, view) is fixed by its seed
                # the first augmentation keeps the plain (image, view) seed the feature cache uses
                offset = tfm_index * self.k_tfm + k
                torch.manual_seed((view_seed(item.impath, view, self.seed, self.root) + offset) & ((1 << 63) - 1))
                imgs.append(tfm(img0))
        return imgs[0] if len(imgs) == 1 else imgs


SAMPLERS = ("RandomSampler", "SequentialSampler")
DASSL_ONLY_SAMPLERS = ("RandomDomainSampler", "SeqDomainSampler", "RandomClassSampler")


def build_sampler(sampler_type, cfg=None, data_source=None, batch_size=32, n_domain=0, n_ins=16, views=0):
    """Dassl's ``build_sampler``: RandomSampler (seeded by (SEED, epoch)) and SequentialSampler.

    Dassl's domain and class samplers serve DA/DG methods no trainer here uses: refused by name.
    """
    if sampler_type not in SAMPLERS:
        if sampler_type in DASSL_ONLY_SAMPLERS:
            raise ConfigError(f"Sampler {sampler_type} is not supported here (only {', '.join(SAMPLERS)}); "
                              "set DATALOADER.*.SAMPLER to one of them.")
        raise ConfigError(f"Unknown sampler {sampler_type!r}; choose one of {', '.join(SAMPLERS)}.")
    seed = cfg.SEED if cfg is not None else -1
    return EpochSampler(len(data_source), seed, shuffle=sampler_type == "RandomSampler", views=views)


def build_data_loader(cfg, sampler_type="SequentialSampler", data_source=None, batch_size=64, n_domain=0, n_ins=2,
                      tfm=None, is_train=True, dataset_wrapper=None):
    """Dassl's ``build_data_loader``; drop_last only when there is at least one full batch."""
    sampler = build_sampler(sampler_type, cfg=cfg, data_source=data_source, batch_size=batch_size,
                            n_domain=n_domain, n_ins=n_ins)
    wrapper = dataset_wrapper or DatasetWrapper
    return DataLoader(
        wrapper(cfg, data_source, transform=tfm, is_train=is_train),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        drop_last=is_train and len(data_source) >= batch_size,
        pin_memory=torch.cuda.is_available() and cfg.USE_CUDA,
        persistent_workers=False,
    )


class DataManager:
    """Builds the dataset and its loaders: ``train_loader_x``, ``train_loader_u``, ``val_loader``, ``test_loader``.

    Dassl's signature: ``custom_tfm_train``/``custom_tfm_test`` replace the config's transforms,
    ``dataset_wrapper`` (a DatasetWrapper subclass) builds every loader's items.
    """

    def __init__(self, cfg, custom_tfm_train=None, custom_tfm_test=None, dataset_wrapper=None, dataset=None):
        # ``dataset``: an already built one (the multitask concatenation, engine/data/multitask.py)
        self.dataset = dataset = dataset if dataset is not None else build_dataset(cfg)
        self.tfm_train = custom_tfm_train or build_transform(cfg, is_train=True)
        self.tfm_test = custom_tfm_test or build_transform(cfg, is_train=False)
        if custom_tfm_train is not None:
            logger.info("* Using custom transform for training")
        if custom_tfm_test is not None:
            logger.info("* Using custom transform for testing")
        loader = functools.partial(build_data_loader, cfg, dataset_wrapper=dataset_wrapper)
        x = cfg.DATALOADER.TRAIN_X
        self.train_loader_x = loader(x.SAMPLER, dataset.train_x, x.BATCH_SIZE, x.N_DOMAIN, x.N_INS,
                                     self.tfm_train, True)
        self.train_loader_u = None
        if dataset.train_u:
            u = x if cfg.DATALOADER.TRAIN_U.SAME_AS_X else cfg.DATALOADER.TRAIN_U
            self.train_loader_u = loader(u.SAMPLER, dataset.train_u, u.BATCH_SIZE, u.N_DOMAIN, u.N_INS,
                                         self.tfm_train, True)
        test = cfg.DATALOADER.TEST
        self.val_loader = None
        if dataset.val:
            self.val_loader = loader(test.SAMPLER, dataset.val, test.BATCH_SIZE, tfm=self.tfm_test, is_train=False)
        self.test_loader = loader(test.SAMPLER, dataset.test, test.BATCH_SIZE, tfm=self.tfm_test, is_train=False)
        self._num_classes = dataset.num_classes
        self._num_source_domains = len(cfg.DATASET.SOURCE_DOMAINS)
        self._lab2cname = dataset.lab2cname
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
