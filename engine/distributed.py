"""Feature extraction sharded over processes with torch.distributed (launched by torchrun).

The image encoder is the only heavy part of a cached run, so it is the only part spread over
processes: each rank encodes its share of the image views the cache lacks, every rank gathers
all of them, rank 0 writes the bundle, and the cache ends byte-identical to a single-process
build. Training the residual stays on one process.

    # encode on 8 GPUs, then train on rank 0 (the other ranks exit after the encoding)
    torchrun --nproc_per_node 8 -m engine.distributed train --config-file ... (train.py's flags)
    # only fill the cache (e.g. before many runs share it)
    torchrun --nproc_per_node 8 -m engine.distributed extract --config-file ... (train.py's flags)
    # several nodes: torchrun --nnodes 2 --node_rank R --rdzv_endpoint HOST:PORT ... the same

One process per GPU (NCCL; rank r uses GPU LOCAL_RANK); without CUDA (or with ``USE_CUDA
False``) the ranks use gloo on the CPU. engine/features.py calls ``encode_sharded`` where it
encodes and ``is_writer`` before it writes; outside torchrun both are no-ops.
"""
import hashlib
import logging
import os
import sys

import torch
import torch.distributed as dist

from .errors import UserError

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


def init_from_env(use_cuda=True):
    """Join the process group torchrun describes in the environment; returns (rank, world size)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise SystemExit("error: run this under torchrun, e.g. torchrun --nproc_per_node 2 -m engine.distributed "
                         "extract --config-file ... (a single process needs no launcher: use train.py)")
    cuda = use_cuda and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))  # "cuda" below means this rank's GPU
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size()


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("extract", "train"):
        raise SystemExit("usage: torchrun --nproc_per_node N -m engine.distributed {extract|train} "
                         "[train.py flags and KEY VALUE opts]")
    mode, rest = argv[0], argv[1:]
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:  # before the slow imports below
        init_from_env()
    from . import launch  # noqa: PLC0415 - the setup train.py runs (config, trainer folders)
    from .features import extract_features  # noqa: PLC0415 - features imports this module
    from .trainer import build_trainer  # noqa: PLC0415

    _, cfg = launch.setup(rest)
    rank, world = init_from_env(cfg.USE_CUDA)
    console = logging.StreamHandler()
    console.setFormatter(logging.Formatter(f"[rank {rank}] %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(console)
    logging.getLogger().setLevel(logging.INFO if rank == 0 else logging.WARNING)
    try:
        extract_features(build_trainer(cfg))
        dist.barrier()  # rank 0 has written every bundle
    finally:
        dist.destroy_process_group()
    if rank == 0:
        logger.info("Feature extraction on %d processes done", world)
        logging.getLogger().removeHandler(console)  # launch.main sets up its own log.txt + console
        if mode == "train":  # the tiny residual trains on one process, from the warm cache
            launch.main(rest)


if __name__ == "__main__":
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
