"""`Datum`, `DatasetBase` and `DATASET_REGISTRY`, with Dassl's and CoOp's semantics.

Few-shot sampling is Dassl's: group items by label in first-appearance order, then
``random.sample(items, K)`` per label (all items when a class has fewer). CoOp samples train
with K shots, then val with min(K, 4), and caches the result per (K, seed); we cache it as
json with paths relative to the dataset folder (portable) and a sha256 of its content, and rebuild
a stale, corrupt or changed cache (kept aside as ``.corrupt``) instead of trusting it; every row of
a cached draw must also be a row of the split it was drawn from. A ``shot_K-seed_S.pkl`` that
CoOp/TaskRes wrote in the same folder is preferred over both (the user's earlier sample is reused),
read with `dassl_pickle`.
"""
import contextlib
import contextvars
import hashlib
import json
import logging
import math
import os
import random
from collections import OrderedDict

from ..errors import DataError
from ..registry import Registry
from ..utils.integrity import json_digest
from ..utils.io import atomic_write_text
from .dassl_pickle import read_dassl_pickle, rebase_items
from .datum import Datum  # noqa: F401 - engine.data.datasets.Datum, as before

logger = logging.getLogger(__name__)

DATASET_REGISTRY = Registry("DATASET")

# Set by ``shared_fewshot_generator``: the one generator every few-shot draw takes from meanwhile.
_SHARED_FEWSHOT_RNG = contextvars.ContextVar("shared_fewshot_rng", default=None)


@contextlib.contextmanager
def shared_fewshot_generator(rng):
    """Within the block every ``load_or_make_fewshot`` draw comes from ``rng``, one after the other, as
    Dassl's do from the global ``random`` seeded once (MVLPT's multitask runs). Such a draw depends on
    the datasets drawn before it, so it is neither read from nor written to the per-(K, seed) cache."""
    token = _SHARED_FEWSHOT_RNG.set(rng)
    try:
        yield rng
    finally:
        _SHARED_FEWSHOT_RNG.reset(token)


class DatasetBase:
    """A dataset = lists of `Datum` for train_x (labelled train), train_u, val and test.

    Subclasses set ``dataset_dir`` and call ``super().__init__(train_x=..., val=..., test=...)``.
    """

    dataset_dir = ""  # folder name under DATASET.ROOT
    domains = []  # domain names, for domain-generalisation datasets

    def __init__(self, train_x=None, train_u=None, val=None, test=None):
        self._train_x = train_x
        self._train_u = train_u
        self._val = val
        self._test = test
        labelled = train_x if train_x else test
        self._num_classes = self.get_num_classes(labelled)
        self._lab2cname, self._classnames = self.get_lab2cname(labelled)

    train_x = property(lambda self: self._train_x)
    train_u = property(lambda self: self._train_u)
    val = property(lambda self: self._val)
    test = property(lambda self: self._test)
    lab2cname = property(lambda self: self._lab2cname)
    classnames = property(lambda self: self._classnames)
    num_classes = property(lambda self: self._num_classes)

    @staticmethod
    def get_num_classes(data_source):
        return max(item.label for item in data_source) + 1

    @staticmethod
    def get_lab2cname(data_source):
        mapping = {item.label: item.classname for item in data_source}
        labels = sorted(mapping)
        return mapping, [mapping[label] for label in labels]

    def check_input_domains(self, source_domains, target_domains):
        for domain in list(source_domains) + list(target_domains):
            if domain not in self.domains:
                raise DataError(
                    f'Domain "{domain}" is not a domain of {type(self).__name__}; valid domains: {", ".join(self.domains)}.'
                )

    @staticmethod
    def split_dataset_by_label(data_source):
        """Label -> items, in the order labels first appear (Dassl's defaultdict)."""
        output = OrderedDict()
        for item in data_source:
            output.setdefault(item.label, []).append(item)
        return output

    @staticmethod
    def split_dataset_by_domain(data_source):
        output = OrderedDict()
        for item in data_source:
            output.setdefault(item.domain, []).append(item)
        return output

    def generate_fewshot_dataset(self, *data_sources, num_shots=-1, repeat=False, rng=None, split=None):
        """Dassl's sampler: K items per label via ``rng.sample`` (``random`` module by default).

        ``split`` ("train" or "val", ours) only names the draw in the warning about short classes:
        the val draw takes min(NUM_SHOTS, 4) per class, so its warning must not read as NUM_SHOTS's."""
        if num_shots < 1:
            return data_sources[0] if len(data_sources) == 1 else data_sources
        rng = rng or random
        output = []
        for data_source in data_sources:
            dataset = []
            short = []  # one summary line, not one per class (1000 lines on ImageNet)
            for label, items in self.split_dataset_by_label(data_source).items():
                if len(items) >= num_shots:
                    sampled = rng.sample(items, num_shots)
                elif repeat:
                    sampled = rng.choices(items, k=num_shots)
                else:
                    short.append(f"{items[0].classname} ({len(items)})")
                    sampled = items
                dataset.extend(sampled)
            if short:
                listed = ", ".join(short[:5]) + (" ..." if len(short) > 5 else "")
                if split == "val":
                    logger.warning("The few-shot val draw takes min(NUM_SHOTS, 4) = %d images per class, but %d "
                                   "classes have fewer in the val split, so all of theirs are used: %s (the train "
                                   "draw is not affected)", num_shots, len(short), listed)
                else:
                    where = " training" if split == "train" else ""
                    logger.warning("%d classes have fewer than NUM_SHOTS=%d%s images, all of theirs are used: %s",
                                   len(short), num_shots, where, listed)
            output.append(dataset)
        return output[0] if len(output) == 1 else output

    def load_or_make_fewshot(self, train, val, num_shots, seed, dataset_root):
        """CoOp's few-shot protocol with a portable cache.

        Draws train at ``num_shots`` then val at ``min(num_shots, 4)`` from a ``random.Random(seed)``
        (equal to Dassl's draws after ``random.seed(seed)``), cached in
        ``<dataset_root>/split_fewshot/shot_K-seed_S.json``; CoOp's ``shot_K-seed_S.pkl`` there wins.
        """
        if num_shots < 1:
            return train, val
        cache_dir = os.path.join(dataset_root, "split_fewshot")
        coop_path = os.path.join(cache_dir, f"shot_{num_shots}-seed_{seed}.pkl")
        if os.path.exists(coop_path):  # drawn earlier by CoOp/TaskRes: the user's sample wins over ours
            return _read_coop_fewshot(coop_path, train, val, dataset_root)
        shared = _SHARED_FEWSHOT_RNG.get()
        if shared is not None:
            logger.info("Drawing a %d-shot dataset from the run's one generator (not cached)", num_shots)
            train = self.generate_fewshot_dataset(train, num_shots=num_shots, rng=shared)
            val = self.generate_fewshot_dataset(val, num_shots=min(num_shots, 4), rng=shared) if val else val
            return train, val
        path = os.path.join(cache_dir, f"shot_{num_shots}-seed_{seed}.json")
        source_id = _fingerprint(train, val)
        cached = _read_fewshot_cache(path, source_id, dataset_root, train, val)
        if cached is not None:
            logger.info("Loading preprocessed few-shot data from %s", path)
            return cached
        rng = random.Random(seed) if seed is not None and seed >= 0 else random.Random()
        logger.info("Creating a %d-shot dataset (seed %s)", num_shots, seed)
        train = self.generate_fewshot_dataset(train, num_shots=num_shots, rng=rng, split="train")
        val = self.generate_fewshot_dataset(val, num_shots=min(num_shots, 4), rng=rng, split="val") if val else val
        payload = {
            "source": source_id,
            "num_shots": num_shots,
            "seed": seed,
            "train": _to_rows(train, dataset_root),
            "val": _to_rows(val or [], dataset_root),
        }
        payload["sha256"] = json_digest(payload)
        try:
            os.makedirs(cache_dir, exist_ok=True)
            atomic_write_text(path, json.dumps(payload, indent=1))
            logger.info("Saved the few-shot split to %s", path)
        except OSError as e:  # a read-only dataset folder: sampling is seeded, so only time is lost
            logger.warning("Could not write the few-shot cache %s (%s); it will be drawn again next time", path, e)
        return train, val

    @staticmethod
    def subsample_classes(*args, subsample="all"):
        """CoOp's base/new split: base = first ceil(n/2) labels, new = the rest, relabelled from 0."""
        if subsample not in ("all", "base", "new"):
            raise DataError(f'DATASET.SUBSAMPLE_CLASSES must be "all", "base" or "new", got "{subsample}".')
        if subsample == "all":
            return args
        labels = sorted({item.label for item in args[0]})
        m = math.ceil(len(labels) / 2)
        selected = labels[:m] if subsample == "base" else labels[m:]
        relabeler = {y: y_new for y_new, y in enumerate(selected)}
        logger.info("SUBSAMPLE %s CLASSES!", subsample.upper())
        output = []
        for dataset in args:
            output.append([
                Datum(impath=item.impath, label=relabeler[item.label], domain=item.domain, classname=item.classname)
                for item in dataset if item.label in relabeler
            ])
        return output


def _to_rows(items, root):
    return [[os.path.relpath(item.impath, root), item.label, item.classname] for item in items]


def _fingerprint(*lists):
    """Identity of the full split a few-shot sample was drawn from (paths relative, labels)."""
    h = hashlib.sha1()
    for items in lists:
        for item in items or []:
            h.update(f"{os.path.basename(item.impath)}\t{item.label}\t{item.classname}\n".encode())
        h.update(b"|")
    return h.hexdigest()


def _read_fewshot_cache(path, source_id, root, train, val):
    """The cached draw, or None (drawn again) when it is stale or damaged; a damaged one is kept aside."""
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            payload = json.load(f)
        if payload.get("source") != source_id:
            logger.warning("Few-shot cache %s was drawn from a different split of this dataset: drawing it again", path)
            return None
        if "sha256" in payload and payload["sha256"] != json_digest(payload):  # files of older versions have none
            raise ValueError("it fails its checksum: it changed after it was drawn")
        known = {(os.path.relpath(item.impath, root), item.label, item.classname) for item in (train or []) + (val or [])}
        out = []
        for key in ("train", "val"):
            items = []
            for n, (rel, label, cname) in enumerate(payload[key]):
                if (rel, label, cname) not in known:
                    raise ValueError(f'its "{key}" entry {n} {[rel, label, cname]} is not an entry of the split')
                items.append(Datum(os.path.join(root, rel), int(label), 0, cname))
            out.append(items)
        return out[0], out[1]
    except (ValueError, KeyError, TypeError) as e:
        bad = path + ".corrupt"
        try:
            os.replace(path, bad)
            kept = f"moved it to {bad}"
        except OSError as err:  # a read-only dataset folder: drawn again in memory, the file stays
            kept = f"could not move it aside ({err.strerror})"
        logger.warning("Few-shot cache %s is corrupt (%s): %s and drawing it again", path, e, kept)
        return None


def _read_coop_fewshot(path, train, val, dataset_root):
    """CoOp's ``split_fewshot/shot_K-seed_S.pkl``: {"train", "val"} (ImageNet's has "train" only)."""
    data = read_dassl_pickle(path, ["train"], optional=["val"])
    if val and "val" not in data:
        raise DataError(f'{path} has no "val" list, which this dataset needs; delete it so the sample is drawn again.')
    new_train = rebase_items(data["train"], dataset_root, path)
    new_val = rebase_items(data["val"], dataset_root, path) if val else val
    known = {item.impath for item in train}
    stray = sum(item.impath not in known for item in new_train)
    if stray:  # CoOp trusts its pickle too; say so when it no longer matches the split on disk
        logger.warning("%d of the %d images in %s are not in this dataset's train split; using the file as it is",
                       stray, len(new_train), path)
    logger.info("Loading preprocessed few-shot data from %s (CoOp's pickle)", path)
    return new_train, new_val


def build_dataset(cfg):
    """Instantiate the dataset class named by ``cfg.DATASET.NAME``."""
    dataset_cls = DATASET_REGISTRY.get(cfg.DATASET.NAME, hint=" Set DATASET.NAME or --dataset-config-file.")
    logger.info("Loading dataset: %s", cfg.DATASET.NAME)
    return dataset_cls(cfg)
