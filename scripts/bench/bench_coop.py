"""Benchmark: CoOp's training loop end to end vs on cached image features, in one run.

A synthetic few-shot task (CLASSES x SHOTS random 224-px images, class names "object <i>")
trains CoOp's prompt learner (trainers/coop.py: PromptLearner, TextEncoder, CustomCLIP; SGD,
batch 32, as CoOp's configs) for EPOCHS epochs on an untrained CLIP of real size (weights do
not change the speed), in two modes:

    end-to-end   every batch of images through the frozen image encoder, every epoch (the
                 original CoOp loop), then the text side and the backward pass
    cached       VIEWS views of each image encoded once (what the feature cache stores; cost
                 included), then every step reads [B, D] features: only the text side runs

Both modes run the same optimisation steps; the script prints the wall time of each, the
ratio, the per-step split between image and text side, and checks that both modes trained the
same context when VIEWS == EPOCHS (the same images in the same order). Image decoding and
augmentation are left out of both modes (the end-to-end mode would pay them every epoch too),
so the ratio is a lower bound for a real run.

    python scripts/bench/bench_coop.py                       # 100 classes x 16 shots, 2 epochs, CPU
    python scripts/bench/bench_coop.py --device cuda --epochs 10
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import clip  # noqa: E402
from trainers import coop  # noqa: E402


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--batch", type=int, default=32, help="DATALOADER.TRAIN_X.BATCH_SIZE of CoOp's configs")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--views", type=int, default=None, help="cached views per image (default: min(4, epochs))")
    p.add_argument("--backbone", default="RN50", help="architecture of the untrained CLIP (RN50, ViT-B/32, ...)")
    p.add_argument("--n-ctx", type=int, default=16)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--project-epochs", type=int, default=200,
                   help="also project a 16-shot run of this many epochs (CoOp's schedule: 200) with 4 cached "
                        "views, from the measured per-step and per-image times (0: no projection)")
    p.add_argument("--json", help="also write the figures to this file")
    return p


def make_model(args):
    model = clip.untrained_model(args.backbone, seed=0).float().eval().to(args.device)
    model.requires_grad_(False)
    classnames = [f"object {i}" for i in range(args.classes)]
    torch.manual_seed(0)
    learner = coop.PromptLearner(classnames, model, n_ctx=args.n_ctx)
    return coop.CustomCLIP(model, learner).to(args.device)


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def train(args, images, labels, features=None):
    """Run the epochs; features: [V, N, D] cached views, or None for end to end. Returns
    (seconds, image seconds, text seconds, final context)."""
    model = make_model(args)
    optim = torch.optim.SGD(model.prompt_learner.parameters(), lr=0.002, momentum=0.9, weight_decay=5e-4)
    n = images.shape[0]
    t_image = t_text = 0.0
    sync(args.device)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch))
        for i in range(0, n - args.batch + 1, args.batch):  # drop_last, as CoOp's loader
            idx = order[i:i + args.batch]
            t0 = time.perf_counter()
            if features is None:
                with torch.no_grad():
                    inputs = model.image_encoder(images[idx].to(args.device))
            else:
                inputs = features[epoch % features.shape[0], idx].to(args.device)
            sync(args.device)
            t1 = time.perf_counter()
            loss = F.cross_entropy(model(inputs), labels[idx].to(args.device))
            optim.zero_grad()
            loss.backward()
            optim.step()
            sync(args.device)
            t_image += t1 - t0
            t_text += time.perf_counter() - t1
    return time.perf_counter() - start, t_image, t_text, model.prompt_learner.ctx.detach().cpu()


@torch.no_grad()
def encode_views(args, images):
    """The cache's work: V views of every image through the encoder once. The views here are
    the same tensors (a benchmark of compute, not of augmentation)."""
    model = make_model(args)
    sync(args.device)
    start = time.perf_counter()
    views = []
    for _ in range(args.views):
        views.append(torch.cat([model.image_encoder(images[i:i + 256].to(args.device)).cpu()
                                for i in range(0, images.shape[0], 256)]))
    sync(args.device)
    return torch.stack(views), time.perf_counter() - start


def main(argv=None):
    args = build_parser().parse_args(argv)
    args.views = args.views or min(4, args.epochs)
    if args.threads:
        torch.set_num_threads(args.threads)
    n = args.classes * args.shots
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, 224, 224, generator=gen)
    labels = torch.arange(args.classes).repeat_interleave(args.shots)
    steps = args.epochs * (n // args.batch)
    print(f"CoOp {args.classes} classes x {args.shots} shots, batch {args.batch}, {args.epochs} epochs "
          f"({steps} steps), untrained {args.backbone}, {args.device}, {torch.get_num_threads()} threads")

    e2e_s, e2e_img, e2e_txt, e2e_ctx = train(args, images, labels)
    features, encode_s = encode_views(args, images)
    cached_loop_s, _, cached_txt, cached_ctx = train(args, images, labels, features)
    cached_s = encode_s + cached_loop_s
    same = None
    if args.views == args.epochs:
        same = bool(torch.allclose(e2e_ctx, cached_ctx, rtol=1e-4, atol=1e-5))

    figures = {
        "classes": args.classes, "shots": args.shots, "epochs": args.epochs, "views": args.views,
        "backbone": args.backbone, "device": args.device, "threads": torch.get_num_threads(),
        "end_to_end_s": round(e2e_s, 2), "cached_s": round(cached_s, 2), "cache_encode_s": round(encode_s, 2),
        "ratio": round(e2e_s / cached_s, 2), "e2e_image_s_per_step": round(e2e_img / steps, 4),
        "text_s_per_step": round(e2e_txt / steps, 4), "cached_text_s_per_step": round(cached_txt / steps, 4),
        "same_context": same,
    }
    print(f"end-to-end : {e2e_s:8.1f} s  (per step: image {e2e_img / steps:.3f} s, text+backward {e2e_txt / steps:.3f} s)")
    print(f"cached     : {cached_s:8.1f} s  ({encode_s:.1f} s encoding {args.views} view(s) once + "
          f"{cached_loop_s:.1f} s of steps)")
    print(f"ratio      : {e2e_s / cached_s:.2f}x faster cached")
    if same is not None:
        print(f"same trained context in both modes: {same}")
    if args.project_epochs:
        # a full run: the end-to-end loop pays both sides every step; the cache pays 4 views once
        full_n = args.classes * 16  # CoOp's 200-epoch schedule is its 16-shot one
        per_epoch = full_n // args.batch
        full_e2e = args.project_epochs * per_epoch * (e2e_img + e2e_txt) / steps
        full_cached = 4 * full_n * encode_s / (args.views * n) + args.project_epochs * per_epoch * cached_txt / steps
        figures.update(projected_epochs=args.project_epochs, projected_end_to_end_s=round(full_e2e),
                       projected_cached_s=round(full_cached), projected_ratio=round(full_e2e / full_cached, 2))
        print(f"projected  : {args.classes} classes x 16 shots, {args.project_epochs} epochs, 4 views: end-to-end {full_e2e:.0f} s, cached "
              f"{full_cached:.0f} s, {full_e2e / full_cached:.2f}x (measured per-step times, not a run)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return figures


if __name__ == "__main__":
    main()
