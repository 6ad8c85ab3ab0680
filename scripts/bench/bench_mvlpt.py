"""Benchmark: an MVLPT multitask source run, MVPT end to end vs MCoOp on cached image features.

Eleven synthetic tasks shaped like CoOp's 11 datasets (their class counts times --scale, SHOTS
random 224-px images per class) train MVLPT's prompt learner (trainers/mvlpt.py) jointly, with
the own-task loss, SGD and batch 32 as the MVLPT configs, on an untrained CLIP of real size
(weights do not change the speed):

    MVPT end to end   every batch through the image encoder with deep visual prompts (and back,
                      for the prompts' gradients); the text features (no text prompt) once
    MCoOp cached      each image encoded once (what the feature cache stores; cost included),
                      then every step runs only the text side over all tasks' classes

Each mode runs --steps optimisation steps after one warm-up step; the script prints seconds per
step, the projected seconds per epoch, and the one-off encoding time of the cached mode. Image
decoding and augmentation are left out of both modes.

    python scripts/bench/bench_mvlpt.py                        # scale 0.1, 4 shots, CPU
    python scripts/bench/bench_mvlpt.py --device cuda --scale 1 --shots 16
"""
import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import clip  # noqa: E402
from engine.config import get_cfg_default  # noqa: E402
from engine.data.multitask import own_task_logits  # noqa: E402
from trainers import extend_cfg, mvlpt  # noqa: E402

# CoOp's 11 datasets and their class counts, in MVLPT's source order
TASKS = (("ImageNet", 1000), ("Caltech101", 100), ("Food101", 101), ("StanfordCars", 196), ("OxfordPets", 37),
         ("OxfordFlowers", 102), ("FGVCAircraft", 100), ("SUN397", 397), ("DescribableTextures", 47),
         ("EuroSAT", 10), ("UCF101", 101))


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=0.1, help="class counts x this (at least 2 per task)")
    p.add_argument("--shots", type=int, default=4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=3, help="timed steps per mode (after one warm-up step)")
    p.add_argument("--n-ctx", type=int, default=16, help="prompt length (the paper's 16 for MCoOp and MVPT)")
    p.add_argument("--backbone", default="ViT-B/32", help="architecture of the untrained CLIP (a ViT)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    return p


def tasks(scale):
    names, ranges, start = [], [], 0
    for name, n in TASKS:
        k = max(2, round(n * scale))
        names += [f"{name} class {i}" for i in range(k)]
        ranges.append((start, start + k))
        start += k
    return names, ranges


def make_model(args, classnames, **keys):
    cfg = extend_cfg(get_cfg_default())
    m = cfg.TRAINER.MVLPT
    m.VPT.N_CTX, m.COOP.N_CTX = keys.get("vpt", 0), keys.get("coop", 0)
    model = clip.untrained_model(args.backbone, seed=0).float().eval().to(args.device)
    model.requires_grad_(False)
    torch.manual_seed(0)
    learner = mvlpt.MultitaskVLPromptLearner(m, classnames, model, cut_contextlen=True)
    return mvlpt.CustomCLIP(model, learner).to(args.device), model


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def run(args, model, inputs, labels, label_to_task, ranges):
    """Seconds per step over args.steps steps (one warm-up step first)."""
    optim = torch.optim.SGD(model.prompt_learner.parameters(), lr=0.002, momentum=0.9, weight_decay=5e-4)
    n = inputs.shape[0]
    times = []
    for step in range(args.steps + 1):
        idx = torch.randint(0, n, (args.batch,))
        sync(args.device)
        start = time.perf_counter()
        logits = own_task_logits(model(inputs[idx]), labels[idx], label_to_task, ranges)
        loss = F.cross_entropy(logits.float(), labels[idx])
        optim.zero_grad()
        loss.backward()
        optim.step()
        sync(args.device)
        if step:
            times.append(time.perf_counter() - start)
    return sum(times) / len(times)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    classnames, ranges = tasks(args.scale)
    label_to_task = torch.tensor([t for t, (a, b) in enumerate(ranges) for _ in range(a, b)], device=args.device)
    labels = torch.arange(len(classnames), device=args.device).repeat_interleave(args.shots)
    n = labels.shape[0]
    steps_per_epoch = n // args.batch
    torch.manual_seed(0)
    images = torch.randn(n, 3, 224, 224, device=args.device)
    print(f"{len(TASKS)} tasks, {len(classnames)} classes, {n} images ({args.shots} shots), batch {args.batch}, "
          f"{steps_per_epoch} steps per epoch, {args.backbone} untrained, {args.device}, "
          f"{torch.get_num_threads()} threads")

    vpt, _ = make_model(args, classnames, vpt=args.n_ctx)
    vpt_step = run(args, vpt, images, labels, label_to_task, ranges)
    del vpt

    coop, clip_model = make_model(args, classnames, coop=args.n_ctx)
    sync(args.device)
    start = time.perf_counter()
    with torch.no_grad():
        feats = torch.cat([clip_model.encode_image(images[i:i + 256]) for i in range(0, n, 256)])
    sync(args.device)
    encode = time.perf_counter() - start
    coop_step = run(args, coop, feats, labels, label_to_task, ranges)

    print(f"MVPT end to end : {vpt_step:.3f} s/step, {vpt_step * steps_per_epoch:.1f} s/epoch")
    print(f"MCoOp cached    : {coop_step:.3f} s/step, {coop_step * steps_per_epoch:.1f} s/epoch "
          f"(+ {encode:.1f} s once to encode {n} images)")
    print(f"per epoch, end to end / cached: {vpt_step / coop_step:.2f}x")


if __name__ == "__main__":
    main()
