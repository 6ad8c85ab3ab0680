"""Sharding primitives of feature extraction under torch.distributed: which rank encodes which
batches, and who writes the cache. engine/features.py calls ``encode_sharded`` where it encodes and
``is_writer`` before it writes; outside a process group both are no-ops. The torchrun entry point
that launches the ranks is engine/distributed.py.
"""
import hashlib
import logging

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


def is_sharded():
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_writer():
    """Whether this process writes cache bundles: rank 0 of a group, or a lone process."""
    return not is_sharded() or dist.get_rank() == 0


def _check_same_keys(keys):
    # Every rank must ask for the same views, or the gather below pairs the wrong rows.
    # They differ only when another process wrote the bundle between the ranks' reads.
    digest = hashlib.sha1(repr(keys).encode()).hexdigest()
    digests = [None] * dist.get_world_size()
    dist.all_gather_object(digests, digest)
    if len(set(digests)) > 1:
        raise RuntimeError("The ranks disagree on which image views the feature cache lacks (another process "
                           "wrote the cache while they read it): run the same command again.")


def training_batch_plan(keys, batch_size):
    """How ``encode_views`` batches training keys: whole images (all their views from one decode),
    ``per_batch`` images a batch. Returns (batches as lists of positions in ``keys``, per_batch)."""
    by_image = {}
    for pos, (index, _) in enumerate(keys):
        by_image.setdefault(index, []).append(pos)
    groups = list(by_image.values())
    per_batch = max(1, batch_size // max(len(g) for g in groups)) if groups else 1
    batches = [[pos for g in groups[i:i + per_batch] for pos in g] for i in range(0, len(groups), per_batch)]
    return batches, per_batch


def encode_sharded(encode_views, encode, items, transform, keys, batch_size, num_workers, device, is_train,
                   **kwargs):
    """``encode_views(encode, items, transform, keys, batch_size, ...)`` spread over the ranks.

    ``keys`` is cut into the batches a single process would form (whole images with all their
    views for training, see ``training_batch_plan``), and rank r encodes batches r, r+W, r+2W, ...:
    each batch goes through the encoder exactly as in a single-process build, so the features
    match bit for bit (another batching could change the last bits of a float). Every rank
    returns all features, in the order of ``keys``.
    """
    args = (num_workers, device, is_train)
    if not is_sharded():
        return encode_views(encode, items, transform, keys, batch_size, *args, **kwargs)
    world, rank = dist.get_world_size(), dist.get_rank()
    _check_same_keys(keys)
    if is_train:
        batches, per_batch = training_batch_plan(keys, batch_size)
        kwargs["per_batch"] = per_batch
    else:
        batches = [list(range(i, min(i + batch_size, len(keys)))) for i in range(0, len(keys), batch_size)]
    owned = [[pos for batch in batches[r::world] for pos in batch] for r in range(world)]
    logger.info("Rank %d/%d encodes %d of %d image views", rank, world, len(owned[rank]), len(keys))
    mine = [keys[pos] for pos in owned[rank]]
    local = encode_views(encode, items, transform, mine, batch_size, *args, **kwargs) if mine else None
    gathered = [None] * world
    dist.all_gather_object(gathered, local)  # CPU tensors: encode_views returns its result on the CPU
    parts = [(owned[r], gathered[r]) for r in range(world) if owned[r]]
    if not parts:
        return torch.empty(0)
    out = torch.empty(len(keys), parts[0][1].shape[1], dtype=parts[0][1].dtype)
    for positions, feats in parts:
        out[torch.tensor(positions)] = feats
    return out
