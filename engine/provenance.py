"""run.json: what made a run folder's numbers, written by the run setup (engine/launch.py) for
every run, training and evaluation alike.

    trainer, dataset, shots, seed, config files + sha256, opts, backbone + weights sha256,
    feature-cache views, git commit (+ dirty), torch / CUDA versions, device, start, end,
    wall time, status, and the results of the run (accuracy, macro-F1, per task) per split

It is written when the run starts (status "running", no end) and again when it ends ("finished",
"failed" or "interrupted"), so a crashed run says so. scripts/summarize.py reads it instead of
parsing folder names and logs. The weights are hashed once per file: the sha256 is kept in
``<feature cache>/weights_sha256.json`` under the file's identity (path, size, mtime), so a
250 MB RN50 file is read once, and a changed file is hashed again.
"""
import datetime
import hashlib
import json
import logging
import os
import platform
import subprocess
import time

from .utils.io import atomic_write_text

logger = logging.getLogger(__name__)

RUN_JSON = "run.json"
VERSION = 1
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sha256_file(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path, cache_dir=None):
    """sha256 of a file, cached under its identity (path|size|mtime, engine.features.file_identity)."""
    from .features import default_cache_dir, file_identity

    identity = file_identity(path)
    store = os.path.join(cache_dir or default_cache_dir(), "weights_sha256.json")
    known = {}
    try:
        with open(store) as f:
            known = json.load(f)
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(identity), str):
        return known[identity]
    digest = sha256_file(path)
    known = dict(known) if isinstance(known, dict) else {}
    known[identity] = digest
    try:
        os.makedirs(os.path.dirname(store), exist_ok=True)
        atomic_write_text(store, json.dumps(known, indent=1, sort_keys=True) + "\n")
    except OSError as e:  # a read-only cache: the hash is still right, only not kept
        logger.warning("Could not keep the weights hash in %s (%s); it is computed again next time", store, e)
    return digest


def weights_record(cfg):
    """(weights path or None, sha256 or None, what identifies them) of the run's backbone."""
    bb = cfg.MODEL.BACKBONE
    if not bb.PRETRAINED:
        return None, None, f"untrained:{bb.NAME}"
    try:
        import clip

        path = clip.local_weights_path(bb.NAME, bb.CACHE_DIR or None, bb.WEIGHTS or None)
    except Exception:  # noqa: BLE001 - a name clip does not know: no file to hash
        path = None
    if not path or not os.path.isfile(path):
        return None, None, f"open_clip:{bb.NAME}" if bb.NAME else ""
    if not cfg.FEATURE_CACHE.ENABLED:  # the cache switched off: nothing is written there, not even the hash
        return path, sha256_file(path), path
    return path, file_sha256(path, cfg.FEATURE_CACHE.DIR or None), path


def git_state(root=ROOT):
    """(commit, dirty) of the checkout, (None, None) outside git."""
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
        return commit, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def _stem(path):
    return os.path.splitext(os.path.basename(path))[0] if path else ""


def describe_method(cfg, args, trainer_cls):
    """(method name, label, order, standard) of a run from its trainer's declared protocol: which
    variant its opts and flags make, and whether its config is the one the protocol publishes."""
    from .config import get_cfg_default
    from .protocol import config_rule_stem, family_of, protocol_of, run_variant

    name = cfg.TRAINER.NAME
    if trainer_cls is None:
        return name, name, 1000, False
    protocol = protocol_of(trainer_cls)
    dataset = _stem(getattr(args, "dataset_config_file", ""))
    flags = {"--enhanced-base": getattr(args, "enhanced_base", None) or "none"}
    variant, published = run_variant(protocol, list(getattr(args, "opts", None) or []), flags, dataset)
    method = f"{name}-{variant.name}" if variant is not None and variant.name else name
    label = (variant.label if variant is not None and variant.label else "") or protocol.label or name
    family = family_of(cfg.MODEL.BACKBONE.NAME)
    shots = cfg.DATASET.NUM_SHOTS if protocol.trains else 1
    rule = config_rule_stem(protocol, dataset, shots, family)
    config_file = getattr(args, "config_file", "") or ""
    if protocol.config is None and config_file:  # Protocol(): the only yaml of its config folder
        folder = os.path.dirname(os.path.abspath(config_file))
        if [n for n in os.listdir(folder) if n.endswith(".yaml")] == [os.path.basename(config_file)]:
            rule = _stem(config_file)
    standard = bool(variant is not None and published and rule == _stem(getattr(args, "config_file", ""))
                    and cfg.FEATURE_CACHE.TRAIN_VIEWS == get_cfg_default().FEATURE_CACHE.TRAIN_VIEWS)
    return method, label, protocol.order, standard


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _sha(path):
    return sha256_file(path) if path and os.path.isfile(path) else None


def read_results(output_dir):
    """{split: numbers} of the results_<split>.json files in a run folder (per-class lists left out)."""
    results = {}
    for name in sorted(os.listdir(output_dir)) if os.path.isdir(output_dir) else []:
        if name.startswith("results_") and name.endswith(".json"):
            try:
                with open(os.path.join(output_dir, name)) as f:
                    payload = json.load(f)
            except (OSError, ValueError):
                continue
            if isinstance(payload, dict):
                results[name[len("results_"):-len(".json")]] = {k: v for k, v in payload.items() if k != "per_class"}
    return results


class RunRecord:
    """The run.json of one run: ``start`` at setup, ``end`` when it is over."""

    def __init__(self, cfg, args, trainer_cls=None):
        import torch

        self.path = os.path.join(cfg.OUTPUT_DIR, RUN_JSON)
        self.t0 = time.time()
        weights, digest, identity = weights_record(cfg)
        commit, dirty = git_state()
        method, label, order, standard = describe_method(cfg, args, trainer_cls)
        self.data = {
            "version": VERSION,
            "status": "running",
            "trainer": cfg.TRAINER.NAME,
            "method": method,  # the trainer and the variant of its declared protocol (TaskRes-enhanced)
            "label": label,
            "order": order,
            "standard": standard,  # the protocol's published config (and alpha), default views
            "dataset": cfg.DATASET.NAME,
            "dataset_config": _stem(getattr(args, "dataset_config_file", "")),
            "datasets": cfg.DATASET.DATASET or cfg.DATASET.NAME,
            "subsample_classes": cfg.DATASET.SUBSAMPLE_CLASSES,
            "shots": cfg.DATASET.NUM_SHOTS,
            "seed": cfg.SEED,  # as set up: a random seed drawn for SEED < 0 is recorded here
            "eval_only": bool(getattr(args, "eval_only", False)),
            "model_dir": os.path.abspath(args.model_dir) if getattr(args, "model_dir", "") else "",
            "enhanced_base": getattr(args, "enhanced_base", None),
            "load_epoch": getattr(args, "load_epoch", None),
            "config_file": getattr(args, "config_file", "") or "",
            "config_sha256": _sha(getattr(args, "config_file", "")),
            "dataset_config_file": getattr(args, "dataset_config_file", "") or "",
            "dataset_config_sha256": _sha(getattr(args, "dataset_config_file", "")),
            "opts": list(getattr(args, "opts", None) or []),
            "max_epoch": cfg.OPTIM.MAX_EPOCH,
            "backbone": cfg.MODEL.BACKBONE.NAME,
            "weights": weights or identity,
            "weights_sha256": digest,
            "feature_cache": {"enabled": bool(cfg.FEATURE_CACHE.ENABLED), "train_views": cfg.FEATURE_CACHE.TRAIN_VIEWS},
            "git_commit": commit,
            "git_dirty": dirty,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "device": "cpu",
            "host": platform.node(),
            "start": _now(),
            "end": None,
            "wall_s": None,
            "results": {},
        }

    def set_device(self, device):
        import torch

        text = str(device)
        if text.startswith("cuda") and torch.cuda.is_available():
            text += f" ({torch.cuda.get_device_name(torch.device(text))})"
        self.data["device"] = text

    def write(self):
        atomic_write_text(self.path, json.dumps(self.data, indent=2) + "\n")

    def start(self):
        """Write the running record; a finished run's record already in the folder is remembered, so
        a later attempt that fails (a corrupt checkpoint, a full disk) does not erase what finished."""
        self.started = True
        self.previous = None
        try:
            with open(self.path) as f:
                text = f.read()
            if json.loads(text).get("status") == "finished":
                self.previous = text
        except (OSError, ValueError, AttributeError):
            pass
        self.write()

    def end(self, status):
        """The record of how the run ended; nothing when it never started (it failed during setup)."""
        if not getattr(self, "started", False):
            return
        if status != "finished" and self.previous is not None:
            atomic_write_text(self.path, self.previous)  # the folder still holds that finished run's results
            return
        self.data.update(status=status, end=_now(), wall_s=round(time.time() - self.t0, 3),
                         results=read_results(os.path.dirname(self.path)))
        self.write()
