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
encodes and ``is_writer`` before it writes (engine/sharding.py); outside torchrun both are no-ops.
"""
import logging
import os
import sys

import torch
import torch.distributed as dist

from .errors import UserError
from .sharding import encode_sharded, is_sharded, is_writer, training_batch_plan  # noqa: F401 - its API, as before

logger = logging.getLogger(__name__)


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
    from .features import extract_features  # noqa: PLC0415 - a slow import, after the launcher check
    from .trainer import build_trainer  # noqa: PLC0415

    args, cfg = launch.setup(rest)
    if args.drawn_seed is not None and args.drawn_seed[0] == "drawn":  # each process would draw its own
        raise UserError("engine.distributed needs a fixed seed (SEED is negative, so every process would draw "
                        "its own): pass --seed N.")
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
