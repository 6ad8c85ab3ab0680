"""The feature cache: frozen-encoder outputs computed once, stored on disk, reused by every run.

TaskRes never changes the image encoder, so the feature of one image view never changes.
Features are stored in *bundles*: one file per (encoder, transform, view, dataset split), each
row keyed by the image's path + size + mtime. A run asks for the rows it needs; only missing
rows are encoded (so a changed image, or a new few-shot sample, encodes just those images),
and the bundle is merged and rewritten atomically under a file lock.

    store = FeatureStore(cache_dir)
    feats = store.features(encoder, items, transform, encoder_key, transform_key,
                           group="OxfordPets/train", views=[0, 1, 2, 3])   # [V, N, D]

`CachedFeatureLoader` then replays Dassl's training loop on stored features: epoch e takes
view e mod V, in the same seeded order the image loader would use.
"""
import fcntl
import hashlib
import logging
import os
import sys
import time

import torch
from torch.utils.data import DataLoader
from torchvision.transforms import Compose, Normalize, PILToTensor, ToTensor

from . import distributed
from .data.data_manager import DatasetWrapper
from .utils.io import atomic_torch_save

logger = logging.getLogger(__name__)

BUNDLE_VERSION = 1
TEST_VIEW = "test"  # the deterministic test transform has a single view


def default_cache_dir():
    """$TASKRES_FEATURE_CACHE, else $XDG_CACHE_HOME/taskres/features, else ~/.cache/taskres/features."""
    if os.environ.get("TASKRES_FEATURE_CACHE"):
        return os.environ["TASKRES_FEATURE_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "taskres", "features")


def image_key(impath):
    """What identifies an image's content cheaply: path, size and modification time."""
    st = os.stat(impath)
    return f"{os.path.abspath(impath)}|{st.st_size}|{st.st_mtime_ns}"


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


def encode_views(encode, items, transform, keys, batch_size, num_workers, device, is_train):
    """Encode (index, view) pairs of ``items``; returns a [len(keys), D] tensor on the CPU.

    ``encode`` maps an image batch already on ``device`` to features. Decoding runs in
    ``num_workers`` processes with pinned memory so the accelerator does not wait on JPEGs;
    features stay on the device until the end, so no batch waits for the previous one's copy.
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    worker_tfm, to_input = split_transform(transform)
    loader = DataLoader(
        DatasetWrapper(items, worker_tfm, is_train), batch_size=batch_size, sampler=keys,
        num_workers=num_workers, pin_memory=cuda, drop_last=False)
    outputs = []
    progress = loader
    if sys.stderr.isatty() and len(loader) > 1:
        from tqdm import tqdm

        progress = tqdm(loader, desc="encoding images", unit="batch")
    with torch.inference_mode():
        for batch in progress:
            images = to_input(batch["img"].to(device, non_blocking=True))
            if cuda:
                images = images.contiguous(memory_format=torch.channels_last)
            outputs.append(_split_on_oom(encode, images))
        return torch.cat(outputs).float().cpu() if outputs else torch.empty(0)


class FeatureStore:
    """Bundles of cached features under ``root``; ``enabled=False`` computes without storing."""

    def __init__(self, root=None, enabled=True):
        self.root = root or default_cache_dir()
        self.enabled = enabled
        self.encoded = 0  # image views encoded by this store (0 on a warm re-run)
        self.encode_seconds = 0.0  # wall time spent encoding them (decoding included)

    def bundle_path(self, encoder_key, transform_key, view, group):
        name = _digest(encoder_key, transform_key, view, group)
        return os.path.join(self.root, _digest(encoder_key)[:8], f"{group.replace('/', '_')}-{view}-{name}.pt")

    def _read(self, path):
        if not os.path.exists(path):
            return {}
        try:
            bundle = torch.load(path, map_location="cpu", weights_only=True)
            if bundle.get("version") != BUNDLE_VERSION or len(bundle["keys"]) != bundle["features"].shape[0]:
                raise ValueError("unexpected layout")
            return dict(zip(bundle["keys"], bundle["features"]))
        except Exception as e:  # noqa: BLE001 - any unreadable cache file is rebuilt, never trusted
            logger.warning("Feature cache file %s is corrupt (%s: %s): rebuilding it", path, type(e).__name__, e)
            try:
                os.remove(path)
            except FileNotFoundError:  # another run removed it first
                pass
            return {}

    def _merge_write(self, path, new_rows):
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

    def features(self, encode, items, transform, encoder_key, transform_key, group, views, batch_size=256,
                 num_workers=0, device="cpu", is_train=True, dtype=torch.float16):
        """Features of ``items`` for each view in ``views``: a tensor [len(views), N, D]."""
        img_keys = [image_key(item.impath) for item in items]
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
            encoded = distributed.encode_sharded(encode_views, encode, items, transform, keys, batch_size,
                                                 num_workers, device, is_train)
            self.encode_seconds += time.perf_counter() - start
            self.encoded += len(missing)
            new_rows = [{} for _ in views]
            for (i, _, v), feat in zip(missing, encoded.to(dtype)):
                new_rows[v][img_keys[i]] = feat
                per_view[v][img_keys[i]] = feat
            if self.enabled and distributed.is_writer():
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
