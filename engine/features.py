"""The feature cache: frozen-encoder outputs computed once, stored on disk, reused by every run.

TaskRes never changes the image encoder, so the feature of one image view never changes.
Features are stored in *bundles*: one file per (encoder, transform, view, dataset split), each
row keyed by the image's path + size + mtime. A run asks for the rows it needs; only missing
rows are encoded (so a changed image, or a new few-shot sample, encodes just those images),
and the bundle is merged and rewritten atomically under a file lock. Every bundle carries a
checksum (engine/utils/integrity.py); one that fails it is moved aside (``.corrupt``) and rebuilt.
A cache folder that is full or read-only is said once per bundle, and the run goes on with the
features in memory.

Three layers, each usable alone:

    store = FeatureStore(cache_dir)                       # bundles on disk
    feats = store.features(encoder, items, transform, encoder_key, transform_key,
                           group="OxfordPets/train", views=[0, 1, 2, 3])   # [V, N, D]
    source = FeatureSource.from_config(cfg, dm, encode, encoder_key, device, dtype, max_epoch)
    source.features("train"), source.features("test")   # one run's splits, as tensors
    train, val, test = source.loaders(train_loader, val_loader, test_loader)

`FeatureSource` is what a trainer holds: its data, transforms and cache keys in one object.
`CachedFeatureLoader` replays Dassl's training loop on stored features: epoch e takes view
e mod V, in the same seeded order the image loader would use.
"""
import fcntl
import hashlib
import logging
import os
import sys
import time

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.io import read_file
from torchvision.transforms import Compose, Normalize, PILToTensor, ToTensor

from . import sharding
from .data.data_manager import DatasetWrapper, relative_impath, view_seed
from .data.device_decode import DevicePipeline, decode_images, resolve_decode
from .data.transforms import transform_signature
from .errors import ConfigError, DataError
from .utils.integrity import load_torch_verified
from .utils.io import atomic_torch_save
from .utils.signals import check_stop
from .utils.tools import read_image

logger = logging.getLogger(__name__)

BUNDLE_VERSION = 1
# Part of every bundle's name: 2 = rows keyed by the path relative to DATASET.ROOT and training
# views seeded by (SEED, relative path, view); files of layout 1 are never read again.
CACHE_LAYOUT = 2
TEST_VIEW = "test"  # the deterministic test transform has a single view
PROGRESS_SECONDS = 30  # encoding progress goes to the log at most this often (and at each tenth)
_TORCH_DEFAULT_THREADS = torch.get_num_threads()  # what FEATURE_CACHE.ENCODE_THREADS 0 means


def default_cache_dir():
    """$TASKRES_FEATURE_CACHE, else $XDG_CACHE_HOME/taskres/features, else ~/.cache/taskres/features."""
    if os.environ.get("TASKRES_FEATURE_CACHE"):
        return os.environ["TASKRES_FEATURE_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "taskres", "features")


def image_key(impath, root=""):
    """What identifies an image's content cheaply: path (relative to ``root``, the data root, so
    a moved data folder keeps its cache), size and modification time."""
    try:
        st = os.stat(impath)
    except FileNotFoundError as e:  # listed when the dataset was read, gone since
        raise DataError(f"Image {impath} is missing (it was there when the dataset was read); restore it, or "
                        "delete the few-shot draw in split_fewshot/ that lists it so a new sample is drawn, "
                        "then run the same command again.") from e
    return f"{relative_impath(impath, root)}|{st.st_size}|{st.st_mtime_ns}"


def _path_of(key):
    return key.rsplit("|", 2)[0]


def file_identity(path):
    """Identity of a weights file for cache keys (path, size, mtime)."""
    if not path or not os.path.exists(path):
        return f"{path}|absent"
    st = os.stat(path)
    return f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"


def _digest(*parts):
    return hashlib.sha1("\n".join(map(str, parts)).encode()).hexdigest()[:20]


def format_size(num_bytes):
    """1536 -> '1.5 KB': the cache size as the log reports it."""
    for unit in ("B", "KB", "MB", "GB"):
        if num_bytes < 1024 or unit == "GB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    return f"{num_bytes:.1f} TB"


def split_transform(transform):
    """Split ``transform`` into (worker part -> uint8 tensor, device part -> model input).

    The common pipelines end in ``ToTensor`` (+ ``Normalize``): decoding workers then ship
    uint8 images (a quarter of the bytes through shared and pinned memory) and the float
    conversion and normalisation run on the accelerator, with the same arithmetic. Any other
    pipeline runs whole in the workers (the device part is then the identity).
    """
    steps = list(getattr(transform, "transforms", []))
    tail = [type(t) for t in steps[-2:]]
    if steps and tail[-1:] == [ToTensor]:
        head, norm = steps[:-1], None
    elif tail == [ToTensor, Normalize]:
        head, norm = steps[:-2], steps[-1]
    else:
        return transform, lambda images: images

    def to_input(images):
        images = images.float().div_(255)
        if norm is not None:
            shape = (1, -1, 1, 1)
            mean = torch.as_tensor(norm.mean, dtype=images.dtype, device=images.device).view(shape)
            std = torch.as_tensor(norm.std, dtype=images.dtype, device=images.device).view(shape)
            images = images.sub_(mean).div_(std)
        return images

    return Compose(head + [PILToTensor()]), to_input


def _split_on_oom(encode, images):
    """Encode a batch; on CUDA out-of-memory, halve it and retry (warned once per split)."""
    try:
        return encode(images)
    except torch.cuda.OutOfMemoryError:
        if images.shape[0] == 1:
            raise
        half = images.shape[0] // 2
        logger.warning("CUDA out of memory encoding %d images: splitting the batch in two and retrying", images.shape[0])
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return torch.cat([_split_on_oom(encode, images[:half]), _split_on_oom(encode, images[half:])])


class _cpu_threads:
    """Run a block with torch's CPU thread count set to ``count`` (0: torch's default), then restore it."""

    def __init__(self, count):
        self.count = count or _TORCH_DEFAULT_THREADS

    def __enter__(self):
        self.before = torch.get_num_threads()
        if self.count != self.before:
            torch.set_num_threads(self.count)

    def __exit__(self, *exc):
        if torch.get_num_threads() != self.before:
            torch.set_num_threads(self.before)


class _Progress:
    """Encoding progress in the log (log.txt too, not only a terminal's bar): at each tenth, at most
    every PROGRESS_SECONDS, and at the end."""

    def __init__(self, total, desc):
        self.total, self.desc = total, desc
        self.start = self.last = time.perf_counter()
        self.next_tenth = 1

    def update(self, done):
        now = time.perf_counter()
        tenth = done * 10 // max(self.total, 1)
        if done < self.total and tenth < self.next_tenth and now - self.last < PROGRESS_SECONDS:
            return
        self.next_tenth, self.last = tenth + 1, now
        rate = done / max(now - self.start, 1e-9)
        logger.info("Encoding %s: %d/%d image views (%d%%), %.1f views/s", self.desc, done, self.total,
                    100 * done // max(self.total, 1), rate)


class _ViewsOfImage(Dataset):
    """Training views of one image from a single decode: item ``i`` -> {"img": [len(views[i]), C, H, W]}.

    Each view is seeded exactly as DatasetWrapper seeds it (``view_seed``), so the views are the
    ones the end-to-end loop sees, bit for bit; the JPEG is decoded once instead of V times.
    """

    def __init__(self, items, transform, views, root, seed):
        self.items, self.transform, self.views, self.root, self.seed = items, transform, views, root, seed

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        impath = self.items[index].impath
        img = read_image(impath)
        out = []
        for view in self.views[index]:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(view_seed(impath, view, self.seed, self.root))
                out.append(self.transform(img))
        return {"img": torch.stack(out)}


def _cat_views(samples):
    return {"img": torch.cat([sample["img"] for sample in samples])}


class _FileBytes(Dataset):
    """Item ``i`` -> the encoded file of image ``i`` as a uint8 tensor (device decoding: workers only read)."""

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        impath = self.items[index].impath
        if not os.path.exists(impath):  # the CPU path's sentence (read_image), without decoding here
            raise DataError(f"Image not found: {impath}; check DATASET.ROOT and the dataset's split file.")
        return {"data": read_file(impath), "index": index}


def _bytes_batch(samples):
    return {"data": [s["data"] for s in samples], "index": [s["index"] for s in samples]}


def _device_batches(loader, pipeline, views, device, root, seed, is_train):
    """Batches of uint8 views decoded and cut on ``device`` (engine/data/device_decode.py)."""
    for batch in loader:
        images = decode_images(batch["data"], device, [loader.dataset.items[i].impath for i in batch["index"]])
        out = []
        for index, image in zip(batch["index"], images):
            if is_train:
                impath = loader.dataset.items[index].impath
                out.append(pipeline.views(image, [view_seed(impath, v, seed, root) for v in views[index]]))
            else:
                out.append(pipeline.views(image, [None]))
        yield {"img": torch.cat(out)}


def encode_views(encode, items, transform, keys, batch_size, num_workers, device, is_train, root="", seed=0,
                 desc="images", per_batch=None, decode_on_device=False):
    """Encode (index, view) pairs of ``items``; returns a [len(keys), D] tensor on the CPU.

    ``encode`` maps an image batch already on ``device`` to features. Decoding runs in
    ``num_workers`` processes with pinned memory so the accelerator does not wait on JPEGs;
    features stay on the device until the end, so no batch waits for the previous one's copy.
    ``root`` and ``seed`` seed the training views (``view_seed``); ``per_batch`` fixes the images
    per training batch (sharded extraction passes the single-process plan's, see
    ``training_batch_plan``). ``decode_on_device`` decodes the JPEGs and cuts the views on
    ``device`` (FEATURE_CACHE.DECODE, engine/data/device_decode.py); workers then only read files.
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    worker_tfm, to_input = split_transform(transform)
    pipeline = DevicePipeline.from_transform(transform) if decode_on_device else None
    if decode_on_device and pipeline is None:
        raise ValueError(f"transform {transform} has steps that cannot run on the device; use FEATURE_CACHE.DECODE cpu")
    views = None
    if is_train:  # one decode per image, all its missing views cut from it
        by_image = {}
        for pos, (index, view) in enumerate(keys):
            by_image.setdefault(index, []).append((pos, view))
        views = {index: [view for _, view in pairs] for index, pairs in by_image.items()}
        if per_batch is None:
            per_batch = sharding.training_batch_plan(keys, batch_size)[1]
        order, loader_batch = list(by_image), per_batch
        positions = [pos for pairs in by_image.values() for pos, _ in pairs]
    else:
        order, loader_batch, positions = [index for index, _ in keys], batch_size, None
    if pipeline is not None:
        loader = DataLoader(_FileBytes(items), batch_size=loader_batch, sampler=order, num_workers=num_workers,
                            drop_last=False, collate_fn=_bytes_batch)
        batches = _device_batches(loader, pipeline, views, device, root, seed, is_train)
    elif is_train:
        loader = DataLoader(
            _ViewsOfImage(items, worker_tfm, views, root, seed), batch_size=loader_batch, sampler=order,
            num_workers=num_workers, pin_memory=cuda, drop_last=False, collate_fn=_cat_views)
        batches = loader
    else:
        loader = DataLoader(
            DatasetWrapper(items, worker_tfm, is_train, root=root, seed=seed), batch_size=batch_size, sampler=keys,
            num_workers=num_workers, pin_memory=cuda, drop_last=False)
        batches = loader
    outputs = []
    progress = batches
    if sys.stderr.isatty() and len(loader) > 1:
        from tqdm import tqdm

        progress = tqdm(batches, desc="encoding images", unit="batch", total=len(loader))
    log = _Progress(len(keys), desc)
    done = 0
    with torch.inference_mode():
        for batch in progress:
            images = to_input(batch["img"].to(device, non_blocking=True))
            if cuda:
                images = images.contiguous(memory_format=torch.channels_last)
            outputs.append(_split_on_oom(encode, images))
            done += images.shape[0]
            log.update(done)
            check_stop()  # SIGTERM while encoding: stop between batches (nothing is half written)
        if not outputs:
            return torch.empty(0)
        feats = torch.cat(outputs).float().cpu()
    if positions is not None:  # back to the order of ``keys``
        ordered = torch.empty_like(feats)
        ordered[torch.tensor(positions)] = feats
        feats = ordered
    return feats


class FeatureStore:
    """Bundles of cached features under ``root``; ``enabled=False`` computes without storing."""

    def __init__(self, root=None, enabled=True):
        self.root = root or default_cache_dir()
        self.enabled = enabled
        self.encoded = 0  # image views encoded by this store (0 on a warm re-run)
        self.encode_seconds = 0.0  # wall time spent encoding them (decoding included)

    def bundle_path(self, encoder_key, transform_key, view, group):
        name = _digest(encoder_key, transform_key, view, group, f"layout {CACHE_LAYOUT}")
        return os.path.join(self.root, _digest(encoder_key)[:8], f"{group.replace('/', '_')}-{view}-{name}.pt")

    def _read(self, path):
        if not os.path.exists(path):
            return {}
        try:
            bundle, _ = load_torch_verified(path, map_location="cpu", weights_only=True)
            if bundle.get("version") != BUNDLE_VERSION or len(bundle["keys"]) != bundle["features"].shape[0]:
                raise ValueError("unexpected layout")
            return dict(zip(bundle["keys"], bundle["features"]))
        except Exception as e:  # noqa: BLE001 - any unreadable cache file is rebuilt, never trusted
            self._move_aside(path, f"{type(e).__name__}: {e}")
            return {}

    @staticmethod
    def _move_aside(path, why):
        """Keep a damaged bundle as ``<path>.corrupt`` (for inspection; the cache size ignores it)."""
        bad = path + ".corrupt"
        try:
            os.replace(path, bad)
            where = f"moved it to {bad}"
        except FileNotFoundError:  # another run moved it first
            where = "another run moved it aside"
        except OSError as e:  # a read-only cache: leave it, it is not read again in this run
            where = f"could not move it aside ({e.strerror})"
        logger.warning("Feature cache file %s is corrupt (%s): %s and rebuilding it", path, why, where)

    def _merge_write(self, path, new_rows):
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path + ".lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # runs sharing the cache merge instead of overwriting
                rows = self._read(path)
                # a changed image (new size or mtime) replaces its old row instead of piling up
                changed = {_path_of(k) for k in new_rows}
                rows = {k: v for k, v in rows.items() if _path_of(k) not in changed}
                rows.update(new_rows)
                keys = list(rows)
                atomic_torch_save({"version": BUNDLE_VERSION, "keys": keys,
                                   "features": torch.stack([rows[k] for k in keys])}, path)
        except OSError as e:  # full or read-only: the features are in memory, only the next run's time is lost
            logger.warning("Could not write the feature cache file %s (%s): this run goes on with the features in "
                           "memory and the next run encodes them again; free space in or make writable %s",
                           path, e.strerror or e, self.root)

    def features(self, encode, items, transform, encoder_key, transform_key, group, views, batch_size=256,
                 num_workers=0, device="cpu", is_train=True, dtype=torch.float16, root="", seed=0,
                 decode_on_device=False):
        """Features of ``items`` for each view in ``views``: a tensor [len(views), N, D].

        ``root`` (DATASET.ROOT) makes row keys relative; training views are seeded by ``seed`` and
        ``root`` too, so ``transform_key`` must name the seed (FeatureSource does).
        """
        img_keys = [image_key(item.impath, root) for item in items]
        per_view, missing = [], []
        for v, view in enumerate(views):
            rows = self._read(self.bundle_path(encoder_key, transform_key, view, group)) if self.enabled else {}
            per_view.append(rows)
            missing += [(i, view, v) for i, k in enumerate(img_keys) if k not in rows]
        if missing:
            logger.info("Encoding %d image views of %s (%d already cached)",
                        len(missing), group, len(views) * len(items) - len(missing))
            keys = [(i, view if is_train else 0) for i, view, _ in missing]
            start = time.perf_counter()
            # under torchrun each rank encodes a share and gets all rows back (engine/distributed.py)
            encoded = sharding.encode_sharded(encode_views, encode, items, transform, keys, batch_size,
                                              num_workers, device, is_train, root=root, seed=seed, desc=group,
                                              decode_on_device=decode_on_device)
            self.encode_seconds += time.perf_counter() - start
            self.encoded += len(missing)
            new_rows = [{} for _ in views]
            for (i, _, v), feat in zip(missing, encoded.to(dtype)):
                new_rows[v][img_keys[i]] = feat
                per_view[v][img_keys[i]] = feat
            if self.enabled and sharding.is_writer():
                for v, view in enumerate(views):
                    if new_rows[v]:
                        self._merge_write(self.bundle_path(encoder_key, transform_key, view, group), new_rows[v])
        return torch.stack([torch.stack([rows[k] for k in img_keys]) for rows in per_view])

    def size_bytes(self):
        total = 0
        for folder, _, files in os.walk(self.root):
            total += sum(os.path.getsize(os.path.join(folder, f)) for f in files if f.endswith(".pt"))
        return total


class CachedFeatureLoader:
    """Dassl's train/test loop over stored features; batches are dicts ``feat, label, index``.

    ``features`` is a callable returning [V, N, D] on first use (so eval-only runs never encode
    training views); the order of each epoch comes from ``sampler`` (an EpochSampler), the same
    order the image loader would use. With ``device`` the features are moved there once and
    batches are sliced on it (no per-batch host-to-device copy).
    """

    def __init__(self, items, features, sampler, batch_size, drop_last, device=None):
        self.items = items
        self._features = features
        self._cache = None
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.labels = torch.tensor([item.label for item in items], dtype=torch.long, device=self.device)
        self.dataset = items

    def all_features(self):
        if self._cache is None:
            self._cache = self._features().to(self.device)
        return self._cache

    def __len__(self):
        n = len(self.items)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        feats = self.all_features()
        view_feats = feats[self.sampler.view() % feats.shape[0]]
        order = torch.tensor(self.sampler.order(), dtype=torch.long, device=self.device)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield {"feat": view_feats[idx], "label": self.labels[idx], "index": idx}


class FeatureSource:
    """One run's frozen-encoder features: which items, which transforms, the cache key, the loaders.

    ``splits`` maps "train" / "val" / "test" to items (None when a split is absent);
    ``transforms`` maps "train" (random views) and "test" (the deterministic view) to
    ``(transform, transform_key)``. ``train_views`` is V (0 for a method that trains nothing).
    ``store`` None means the cache is off: nothing is read or written, features are computed.
    """

    def __init__(self, store, encode, encoder_key, group, splits, transforms, train_views, device,
                 dtype=torch.float16, batch_size=256, num_workers=0, root="", seed=0, encode_threads=1,
                 decode_on_device=False):
        self.encode_threads = encode_threads  # torch CPU threads while encoding on the CPU
        self.store = store
        self.encode = encode
        self.encoder_key = encoder_key
        self.group = group
        self.splits = splits
        self.transforms = transforms
        self.train_views = train_views
        self.device = torch.device(device)
        self.dtype = dtype
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.root = root
        self.seed = seed if seed is not None and seed > 0 else 0  # as view_seed reads it
        self.decode_on_device = decode_on_device  # JPEG decode + views on the device (device_decode.py)
        self._told_views = False

    @classmethod
    def from_config(cls, cfg, dm, encode, encoder_key, device, dtype, max_epoch, trains=True):
        """The source of a run: FEATURE_CACHE.* keys, the DataManager's splits and transforms.

        With FEATURE_CACHE.ENABLED False the source still computes features on request (nothing
        stored); the trainer then keeps its image loaders (end-to-end mode).
        """
        fc = cfg.FEATURE_CACHE
        if fc.TRAIN_VIEWS < 1:
            raise ConfigError(f"FEATURE_CACHE.TRAIN_VIEWS must be at least 1, got {fc.TRAIN_VIEWS}.")
        if fc.ENCODE_THREADS < 0:
            raise ConfigError(f"FEATURE_CACHE.ENCODE_THREADS must be 0 (torch's default) or a positive count, "
                              f"got {fc.ENCODE_THREADS}.")
        threads = fc.ENCODE_THREADS or _TORCH_DEFAULT_THREADS
        if torch.device(device).type == "cpu" and threads != 1:  # other sums, other last bits: other features
            encoder_key = f"{encoder_key}|cpu-threads={threads}"
        ds = dm.dataset
        store = FeatureStore(fc.DIR or None) if fc.ENABLED else None
        if store is None:
            logger.info("Feature cache off: the image encoder runs in the loop (end-to-end mode)")
        else:
            logger.info("Feature cache: %s", store.root)
        on_device, why_not = resolve_decode(fc.DECODE, device, {"train": dm.tfm_train, "test": dm.tfm_test})
        if on_device:
            logger.info("Feature cache: JPEGs decoded and views cut on %s (FEATURE_CACHE.DECODE %s)", device, fc.DECODE)
        elif why_not:
            logger.info("Feature cache: decoding on the CPU workers, not on %s: %s", device, why_not)
        # device-decoded pixels differ slightly from Pillow's: their features are other cache rows
        decoded = "|decode=device" if on_device else ""
        return cls(
            store, encode, encoder_key, cfg.DATASET.NAME,
            splits={"train": ds.train_x, "val": ds.val or None, "test": ds.test},
            # the training views depend on the run's seed (view_seed), so their key names it
            transforms={"train": (dm.tfm_train, f"{transform_signature(cfg, True)}|seed={max(cfg.SEED, 0)}{decoded}"),
                        "test": (dm.tfm_test, f"{transform_signature(cfg, False)}{decoded}")},
            # more views than epochs would never be used
            train_views=min(fc.TRAIN_VIEWS, max_epoch) if trains else 0,
            device=device, dtype=dtype, batch_size=fc.ENCODE_BATCH_SIZE, num_workers=cfg.DATALOADER.NUM_WORKERS,
            root=cfg.DATASET.ROOT, seed=cfg.SEED, encode_threads=fc.ENCODE_THREADS, decode_on_device=on_device)

    def default_views(self, split):
        """Training: views 0..V-1 of the random transform; val/test: the test transform's one view."""
        return list(range(self.train_views)) if split == "train" and self.train_views else [TEST_VIEW]

    def features(self, split, views=None, items=None):
        """Features of ``split``'s items for each view: [len(views), N, D] in the encoder's dtype.

        ``views`` holds view indices of the training transform and/or ``"test"`` (the test
        transform; on "train" that gives un-augmented training features, as a linear probe uses).
        ``items`` replaces the split's items (e.g. a class subset of them); rows are shared by key.
        """
        items = self.splits.get(split) if items is None else items
        if items is None:
            raise ValueError(f"This run has no {split!r} split.")
        views = self.default_views(split) if views is None else list(views)
        if split == "train" and views != [TEST_VIEW] and not self._told_views:
            logger.info("Feature cache: %d training view(s) per image (epoch e trains on view e mod %d)",
                        len(views), len(views))
            self._told_views = True
        out = {}
        augmented = [v for v in views if v != TEST_VIEW]
        for kind, kind_views in (("train", augmented), ("test", [TEST_VIEW] if TEST_VIEW in views else [])):
            if not kind_views:
                continue
            transform, transform_key = self.transforms[kind]
            with _cpu_threads(self.encode_threads if self.device.type == "cpu" else torch.get_num_threads()):
                feats = (self.store or FeatureStore(enabled=False)).features(
                    self.encode, items, transform, self.encoder_key, transform_key, f"{self.group}/{split}",
                    kind_views, batch_size=self.batch_size, num_workers=self.num_workers, device=self.device,
                    is_train=kind == "train", dtype=self.dtype, root=self.root, seed=self.seed,
                    decode_on_device=self.decode_on_device)
            out.update(zip(kind_views, feats))
        if self.store is not None:
            logger.info("Feature cache holds %s in %s", format_size(self.store.size_bytes()), self.store.root)
        return torch.stack([out[v] for v in views])

    def loader(self, split, image_loader):
        """A CachedFeatureLoader replacing ``image_loader`` (same sampler, batch size, drop_last)."""
        if image_loader is None:
            return None
        return CachedFeatureLoader(self.splits[split], lambda: self.features(split), image_loader.sampler,
                                   image_loader.batch_size, image_loader.drop_last, device=self.device)

    def loaders(self, train_loader, val_loader, test_loader):
        """Feature loaders for the three image loaders (the train one only when the method trains)."""
        train = self.loader("train", train_loader) if self.train_views else train_loader
        test = self.loader("test", test_loader)
        val_items, test_items = self.splits.get("val"), self.splits.get("test")
        # ImageNet's val set is its test set: the test loader serves both, read from disk once
        same_as_test = val_items is not None and [d.impath for d in val_items] == [d.impath for d in test_items]
        val = test if same_as_test else self.loader("val", val_loader)
        return train, val, test


def extract_features(trainer):
    """Fill the cache with every split a run of ``trainer`` reads (train views, val, test)."""
    seen = set()
    for loader in (trainer.train_loader_x, trainer.val_loader, trainer.test_loader):
        if isinstance(loader, CachedFeatureLoader) and id(loader) not in seen:
            seen.add(id(loader))
            loader.all_features()
    if not seen:
        logger.warning("FEATURE_CACHE.ENABLED is False: there is nothing to extract")
