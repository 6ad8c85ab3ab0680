"""Benchmark of the warm cached TaskRes loop against a bare torch loop doing the same math.

An ImageNet-shaped synthetic task (CLASSES x SHOTS training features of DIM, no encoding: the
cache is warm) trained two ways in one process, epochs interleaved so both see the same machine
load:

    ours  the real TaskRes trainer's ``run_epoch`` (CustomCLIP + TaskResLearner, the registered
          optimiser and cosine schedule, CachedFeatureLoader and EpochSampler, the meters, the
          ``epoch [..] batch [..]`` log lines into a log file, tensorboard scalars)
    bare  a plain loop: the same batches in the same order, normalisation, logits, cross-entropy
          and Adam (same lr and weight decay), nothing else

and prints seconds per epoch of each and their ratio (the issue's target: ours <= 1.3x bare),
for each torch thread count asked for (FEATURE_CACHE.NUM_THREADS). The first epoch of each is a
warm-up and is not counted. A few epochs suffice on a CPU: the ratio is per epoch.

    python scripts/bench/bench_cached_loop.py                      # 1000 x 16, 1024-d, threads 1
    python scripts/bench/bench_cached_loop.py --threads 1 2 --epochs 3
"""
import argparse
import logging
import math
import os
import sys
import tempfile
import time
from collections import namedtuple

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

TRAINER_CONFIG = os.path.join(ROOT, "configs", "trainers", "TaskRes", "adam_lr2e-4_B256_ep200.yaml")
Item = namedtuple("Item", "label")


class _StubCLIP(nn.Module):
    """What CustomCLIP reads from CLIP when batches hold features: a dtype and the logit scale."""

    def __init__(self):
        super().__init__()
        self.visual = nn.Linear(1, 1)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(100.0)), requires_grad=False)


def build_ours(feats, labels, base, alpha, epochs, out_dir):
    """A TaskRes trainer on stored features, set up as build_model leaves it (no dataset, no CLIP)."""
    import trainers
    from engine.config import get_cfg_default, merge_from_file
    from engine.data.data_manager import EpochSampler
    from engine.features import CachedFeatureLoader
    from engine.trainer import TrainerBase
    from trainers.taskres import CustomCLIP, TaskRes, TaskResLearner

    cfg = trainers.extend_cfg(get_cfg_default())
    merge_from_file(cfg, TRAINER_CONFIG)
    cfg.OPTIM.MAX_EPOCH = epochs
    trainer = TaskRes.__new__(TaskRes)
    TrainerBase.__init__(trainer)
    trainer.cfg, trainer.device, trainer.prec, trainer.dtype = cfg, torch.device("cpu"), "fp32", torch.float32
    trainer.max_epoch, trainer.epoch, trainer.output_dir = epochs, 0, out_dir
    trainer.model = CustomCLIP(_StubCLIP(), TaskResLearner(base.clone(), alpha))
    trainer.register_trainable()
    items = [Item(int(y)) for y in labels]
    trainer.train_loader_x = CachedFeatureLoader(items, lambda: feats[None], EpochSampler(len(items), seed=1),
                                                 cfg.DATALOADER.TRAIN_X.BATCH_SIZE, drop_last=True)
    trainer.init_writer(os.path.join(out_dir, "tensorboard"))
    return trainer


def ours_epoch(trainer, epoch):
    trainer.epoch = epoch
    trainer.before_epoch()
    trainer.run_epoch()
    trainer.update_lr()


def build_bare(base, alpha, lr, weight_decay):
    residual = torch.zeros_like(base, requires_grad=True)
    return residual, torch.optim.Adam([residual], lr=lr, weight_decay=weight_decay)


def bare_epoch(state, feats, labels, base, alpha, batch, epoch):
    from engine.data.data_manager import EpochSampler

    residual, optim = state
    sampler = EpochSampler(feats.shape[0], seed=1)
    sampler.set_epoch(epoch)
    order = torch.tensor(sampler.order())
    scale = 100.0
    for b in range(feats.shape[0] // batch):
        idx = order[b * batch:(b + 1) * batch]
        image = F.normalize(feats[idx], dim=-1)
        text = F.normalize(base + alpha * residual, dim=-1)
        loss = F.cross_entropy(scale * image @ text.t(), labels[idx])
        optim.zero_grad()
        loss.backward()
        optim.step()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--epochs", type=int, default=3, help="epochs per side, the first one not counted")
    p.add_argument("--threads", type=int, nargs="+", default=[1], help="torch thread counts to measure")
    args = p.parse_args(argv)

    g = torch.Generator().manual_seed(0)
    n = args.classes * args.shots
    feats = torch.randn(n, args.dim, generator=g)
    labels = torch.arange(args.classes).repeat_interleave(args.shots)
    base = torch.randn(args.classes, args.dim, generator=g)
    alpha = 0.5
    out_dir = tempfile.mkdtemp(prefix="bench_cached_loop_")
    handler = logging.FileHandler(os.path.join(out_dir, "log.txt"))  # the log lines a real run writes
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)

    print(f"cached TaskRes loop vs bare torch loop: {args.classes} classes x {args.shots} shots ({n} features), "
          f"{args.dim}-d, batch 256, Adam, {args.epochs} epochs each (first not counted), CPU "
          f"({os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f})")
    print(f"{'threads':>7}  {'ours s/epoch':>12}  {'bare s/epoch':>12}  {'ours/bare':>9}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        trainer = build_ours(feats, labels, base, alpha, args.epochs, out_dir)
        bare = build_bare(base, alpha, trainer.cfg.OPTIM.LR, trainer.cfg.OPTIM.WEIGHT_DECAY)
        times = {"ours": [], "bare": []}
        for epoch in range(args.epochs):  # interleaved: both sides see the same load
            start = time.perf_counter()
            ours_epoch(trainer, epoch)
            times["ours"].append(time.perf_counter() - start)
            start = time.perf_counter()
            bare_epoch(bare, feats, labels, base, alpha, 256, epoch)
            times["bare"].append(time.perf_counter() - start)
        trainer.close_writer()
        ours = sum(times["ours"][1:]) / max(len(times["ours"]) - 1, 1)
        plain = sum(times["bare"][1:]) / max(len(times["bare"]) - 1, 1)
        print(f"{threads:>7}  {ours:>12.2f}  {plain:>12.2f}  {ours / plain:>8.2f}x")
    print("target: ours <= 1.3x bare")


if __name__ == "__main__":
    main()
