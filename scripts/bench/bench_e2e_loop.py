"""Benchmark: our end-to-end TaskRes loop (FEATURE_CACHE.ENABLED False) vs a bare torch loop of the
original TaskRes step, timed per epoch in one process.

The original TaskRes trains with the frozen encoder in the loop: every step decodes and augments a
batch of images (random resized crop, flip, CLIP normalisation), runs the image encoder, and takes
an Adam step on the residual of the text classifier. Our end-to-end mode is the reference users
compare with the original, so it must not be slower. This script runs

    ours   train.main with FEATURE_CACHE.ENABLED False (the real dataset, DataManager, trainer)
    bare   a DataLoader over the same training images with the same transforms, the same encoder
           object under no_grad, and the residual step (normalise, cosine logits, cross-entropy,
           Adam) written out in a dozen lines

on the synthetic ImageNet-layout task of bench_feature_cache.py (CLASSES x SHOTS JPEGs; random
RN50 weights, speed does not depend on them, or a weights file such as the micro-CLIP, whose
small encoder leaves the loop's own costs visible), with the same batch size, worker count and torch
thread count, and prints seconds per epoch of each and the ratio. --profile prints ours' cProfile
top entries (what bounds it).

    python scripts/bench/bench_e2e_loop.py [--classes 10] [--shots 16] [--epochs 3] [--profile]
    python scripts/bench/bench_e2e_loop.py --backbone /path/to/micro-clip-fmnist.pt --epochs 10 --profile
"""
import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.dirname(os.path.abspath(__file__))]

TRAINER_CONFIG = os.path.join(ROOT, "configs", "trainers", "TaskRes", "adam_lr2e-4_B256_ep200.yaml")


def run_ours(args, data):
    """train.main end to end; returns (trainer, seconds of each epoch)."""
    import train
    from engine.trainer import TrainerX
    from engine.utils import close_logger

    times = []
    run_epoch = TrainerX.run_epoch

    def timed(self):
        start = time.perf_counter()
        run_epoch(self)
        times.append(time.perf_counter() - start)

    TrainerX.run_epoch = timed
    argv = ["--root", data, "--seed", "1", "--trainer", "TaskRes", "--config-file", TRAINER_CONFIG,
            "--output-dir", os.path.join(args.out, "runs", f"ours_{time.time_ns()}"),
            "DATASET.NAME", "ImageNet", "DATASET.NUM_SHOTS", str(args.shots), "OPTIM.MAX_EPOCH", str(args.epochs),
            "MODEL.BACKBONE.NAME", args.backbone,
            # a named model with random weights (speed does not depend on them); a file is loaded as is
            "MODEL.BACKBONE.PRETRAINED", str(os.path.isfile(args.backbone)),
            "TRAINER.TaskRes.RESIDUAL_SCALE", "0.5", "DATALOADER.NUM_WORKERS", str(args.workers),
            "USE_CUDA", "False", "FEATURE_CACHE.ENABLED", "False", "FEATURE_CACHE.NUM_THREADS", str(args.threads),
            "VERBOSE", "False"]
    try:
        trainer = train.main(argv)
    finally:
        TrainerX.run_epoch = run_epoch
        close_logger()
    return trainer, times


def run_bare(trainer, args):
    """The original TaskRes step on the same images, encoder and hyper-parameters; seconds per epoch."""
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms as T

    cfg = trainer.cfg
    size = cfg.INPUT.SIZE
    transform = T.Compose([T.RandomResizedCrop(size, scale=cfg.INPUT.RRCROP_SCALE,
                                               interpolation=T.InterpolationMode.BICUBIC),
                           T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD)])
    items = [(d.impath, d.label) for d in trainer.dm.dataset.train_x]

    class Images(Dataset):
        def __len__(self):
            return len(items)

        def __getitem__(self, i):
            path, label = items[i]
            return transform(Image.open(path).convert("RGB")), label

    batch = cfg.DATALOADER.TRAIN_X.BATCH_SIZE
    loader = DataLoader(Images(), batch_size=batch, shuffle=True, num_workers=args.workers,
                        drop_last=len(items) >= batch)
    model = trainer.model
    encoder, dtype = model.image_encoder, model.dtype
    base = model.prompt_learner.base_text_features.detach().float()
    residual = torch.zeros_like(base, requires_grad=True)
    optim = torch.optim.Adam([residual], lr=cfg.OPTIM.LR)
    scale = model.logit_scale.exp().detach().float()
    alpha = float(cfg.TRAINER.TaskRes.RESIDUAL_SCALE)
    times = []
    for _ in range(args.epochs):
        start = time.perf_counter()
        for images, labels in loader:
            with torch.no_grad():
                features = encoder(images.type(dtype)).float()
            classifier = F.normalize(base + alpha * residual, dim=-1)
            logits = scale * F.normalize(features, dim=-1) @ classifier.t()
            loss = F.cross_entropy(logits, labels)
            optim.zero_grad()
            loss.backward()
            optim.step()
        times.append(time.perf_counter() - start)
    return times, Images()


def item_seconds(datasets, rounds=3):
    """Seconds per item (decode + augment) of each dataset, in this process, rounds interleaved
    so that a change of machine load hits every dataset alike: the workers' share of an epoch."""
    totals = [0.0] * len(datasets)
    for _ in range(rounds):
        for k, dataset in enumerate(datasets):
            start = time.perf_counter()
            for i in range(len(dataset)):
                dataset[i]
            totals[k] += (time.perf_counter() - start) / len(dataset)
    return [t / rounds for t in totals]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--size", type=int, default=224, help="side of the generated JPEGs")
    p.add_argument("--backbone", default="RN50",
                   help="a CLIP name (random weights) or a weights file, e.g. the micro-CLIP of scripts/micro_clip.py: "
                        "on a CPU RN50's forward hides everything else")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--threads", type=int, default=1, help="torch threads of both loops (FEATURE_CACHE.NUM_THREADS)")
    p.add_argument("--profile", action="store_true", help="print our loop's cProfile top entries")
    p.add_argument("--out", default=os.path.join(ROOT, "output", "bench_e2e_loop"))
    args = p.parse_args(argv)

    import torch

    from bench_feature_cache import make_task

    data, _ = make_task(args.out, args.classes, args.shots, 2, args.size, args.workers)
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    trainer, ours = run_ours(args, data)
    if profiler:
        profiler.disable()
    bare, bare_items = run_bare(trainer, args)
    ours_item, bare_item = item_seconds([trainer.train_loader_x.dataset, bare_items])
    # the first epoch of each pays worker start-up; the median of the rest is the steady state
    steady = (lambda t: statistics.median(t[1:]) if len(t) > 1 else t[0])
    n = len(trainer.dm.dataset.train_x)
    print(f"TaskRes end to end, {args.classes} classes x {args.shots} shots (N={n}), {args.backbone}"
          f"{'' if os.path.isfile(args.backbone) else ' (random weights)'}, "
          f"{args.epochs} epochs, {args.workers} workers, {torch.get_num_threads()} torch thread(s), "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"ours (train.py, FEATURE_CACHE.ENABLED False): epochs {', '.join(f'{t:.2f}' for t in ours)} s; "
          f"steady {steady(ours):.2f} s/epoch")
    print(f"bare loop (original TaskRes step):            epochs {', '.join(f'{t:.2f}' for t in bare)} s; "
          f"steady {steady(bare):.2f} s/epoch")
    print(f"ours / bare = {steady(ours) / steady(bare):.2f}x (target <= 1.0x)")
    print(f"per image decode + augment, in-process, interleaved: ours {1e3 * ours_item:.2f} ms, "
          f"bare {1e3 * bare_item:.2f} ms ({ours_item / bare_item:.2f}x)")
    if profiler:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(25)
        print(text.getvalue())


if __name__ == "__main__":
    main()
