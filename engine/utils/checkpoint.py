"""Checkpoints in Dassl's format and names, written atomically.

A checkpoint is a dict ``{state_dict, epoch (1-based), optimizer, scheduler, val_result}``
saved as ``<dir>/model.pth.tar-<epoch>`` (or ``model-best.pth.tar``); ``<dir>/checkpoint``
names the latest one, and resuming reads it. Every file is written to a temporary name and
renamed, so a process killed mid-write leaves the previous checkpoint intact. Every file carries a
checksum (engine/utils/integrity.py) checked on load: a changed byte is refused, never evaluated
or resumed from; Dassl's files (no checksum) get their zip CRCs checked.
"""
import glob
import logging
import os
import pickle
import zipfile
from collections import OrderedDict

import torch

from ..errors import CheckpointError
from .integrity import IntegrityError, load_torch_verified
from .io import atomic_torch_save, atomic_write_text, mkdir_if_missing

logger = logging.getLogger(__name__)

POINTER_FILE = "checkpoint"
# what unpickling damaged bytes raises: besides the usual, random bytes decode to absurd
# lengths (MemoryError, OverflowError) or to calls with the wrong arguments (TypeError, ...); a
# truncated zip can end in OSError (a seek past the end)
UNREADABLE = (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, MemoryError,
              OverflowError, TypeError, KeyError, IndexError, AttributeError, OSError)
BEST_NAME = "model-best.pth.tar"


def checkpoint_name(epoch):
    return f"model.pth.tar-{epoch}"


def save_checkpoint(state, save_dir, is_best=False, remove_module_from_keys=True, model_name="", update_pointer=True):
    """Save ``state`` under ``save_dir``; returns the file path (Dassl's signature)."""
    mkdir_if_missing(save_dir)
    if remove_module_from_keys:  # DataParallel prefixes
        state["state_dict"] = OrderedDict(
            (k[7:] if k.startswith("module.") else k, v) for k, v in state["state_dict"].items())
    fpath = os.path.join(save_dir, model_name or checkpoint_name(state["epoch"]))
    try:
        atomic_torch_save(state, fpath)
        if update_pointer:
            atomic_write_text(os.path.join(save_dir, POINTER_FILE), os.path.basename(fpath) + "\n")
    except OSError as e:
        raise CheckpointError(
            f"Could not write checkpoint {fpath} ({e.strerror or e}); free space or fix permissions in {save_dir}, "
            "then run the same command again to resume from the previous checkpoint.") from e
    logger.info("Checkpoint saved to %s", fpath)
    if is_best:
        best = os.path.join(save_dir, BEST_NAME)
        atomic_torch_save(state, best)
        logger.info('Best checkpoint saved to "%s"', best)
    return fpath


def load_checkpoint(fpath, map_location="cpu"):
    """Load a checkpoint file; a missing, truncated or corrupt file raises CheckpointError."""
    if not fpath:
        raise CheckpointError("No checkpoint file was given.")
    if not os.path.exists(fpath):
        raise CheckpointError(f'Checkpoint not found at "{fpath}".')
    fix = _fix_for(fpath)
    try:
        checkpoint, status = load_torch_verified(fpath, map_location=map_location, weights_only=False)
    except PermissionError as e:
        raise CheckpointError(f"Cannot read checkpoint {fpath} ({e.strerror}); fix its permissions.") from e
    except IntegrityError as e:
        raise CheckpointError(
            f"Checkpoint {fpath} fails its checksum ({e}): it changed after it was written; {fix}.") from e
    except UNREADABLE as e:
        raise CheckpointError(f"Checkpoint {fpath} is truncated or corrupt ({type(e).__name__}); {fix}.") from e
    if status != "sealed":
        logger.info("%s has no checksum of ours (written by Dassl or downloaded): %s", fpath,
                    "its zip CRCs are correct" if status == "crc only" else "torch's legacy format, nothing to check")
    return checkpoint


def _fix_for(fpath):
    """What to do about a damaged file: a run's checkpoint can be replaced by an earlier one."""
    name = os.path.basename(fpath)
    if name.startswith("model.pth.tar-") or name == BEST_NAME:
        return f"delete it (and point {POINTER_FILE} at an earlier file if you want to resume from there)"
    return "delete it and make or download it again"


def list_epochs(directory):
    """The epochs with a ``model.pth.tar-<epoch>`` file in ``directory``, sorted."""
    epochs = []
    for path in glob.glob(os.path.join(directory, "model.pth.tar-*")):
        suffix = path.rsplit("-", 1)[-1]
        if suffix.isdigit():
            epochs.append(int(suffix))
    return sorted(epochs)


def remove_stale_temporaries(directory):
    """Delete half-written files left by a process killed during an atomic write."""
    for tmp in glob.glob(os.path.join(directory, ".*.tmp")):
        logger.warning("Removing a half-written file left by an interrupted run: %s", tmp)
        os.remove(tmp)


def read_pointer(fdir):
    """The checkpoint file named by ``fdir/checkpoint``, or None when there is none."""
    pointer = os.path.join(fdir, POINTER_FILE)
    if not os.path.exists(pointer):
        return None
    with open(pointer) as f:
        name = f.readline().strip()
    if not name:
        raise CheckpointError(f"{pointer} is empty; delete it to start the run afresh, or write a checkpoint file name in it.")
    return os.path.join(fdir, name)


def resume_from_checkpoint(fdir, model, optimizer=None, scheduler=None):
    """Load the latest checkpoint of ``fdir`` into model/optimizer/scheduler; returns its epoch."""
    fpath = read_pointer(fdir)
    if fpath is None:
        raise CheckpointError(f"No {POINTER_FILE} file in {fdir} to resume from.")
    logger.info('Loading checkpoint from "%s"', fpath)
    checkpoint = load_checkpoint(fpath)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(
            f"Checkpoint {fpath} does not fit this model ({str(e).splitlines()[0]}); it was made with a different "
            "dataset or backbone: use another --output-dir.") from e
    logger.info("Loaded model weights")
    if optimizer is not None and checkpoint.get("optimizer"):
        optimizer.load_state_dict(checkpoint["optimizer"])
        logger.info("Loaded optimizer")
    if scheduler is not None and checkpoint.get("scheduler"):
        scheduler.load_state_dict(checkpoint["scheduler"])
        logger.info("Loaded scheduler")
    start_epoch = checkpoint["epoch"]
    logger.info("Previous epoch: %d", start_epoch)
    return start_epoch


def load_pretrained_weights(model, weight_path):
    """Load matching weights into ``model``; logs what was skipped (Dassl's helper)."""
    checkpoint = load_checkpoint(weight_path)
    state_dict = checkpoint.get("state_dict", checkpoint)
    own = model.state_dict()
    matched = {k: v for k, v in state_dict.items() if k in own and own[k].size() == v.size()}
    own.update(matched)
    model.load_state_dict(own)
    skipped = sorted(set(state_dict) - set(matched))
    if not matched:
        logger.warning('No weights from "%s" matched the model (check the key names)', weight_path)
    else:
        logger.info('Loaded pretrained weights from "%s"; skipped: %s', weight_path, skipped or "none")
