"""Benchmark: one end-to-end training step of each method that changes the image tower.

MaPLe, PromptSRC and CLIP-LoRA (trainers/maple.py, promptsrc.py, clip_lora.py) cannot train on cached
image features: every step runs the image encoder forward and back. This times one optimisation
step (forward, the method's loss, backward, optimiser step) of each at its published setting
(MaPLe depth 9 with 2 context tokens, PromptSRC depth 9/9 with 4+4 tokens and its SCL losses, CLIP-LoRA
r 2 on q, k, v of every block in both towers), and as a reference CoOp's end-to-end step (frozen image
encoder, no gradient through it), on an untrained CLIP of real size (weights do not change the speed)
and random images; data loading and augmentation are left out.

    python scripts/bench/bench_tower_methods.py                      # ViT-B/16, batch 4, 10 classes, CPU
    python scripts/bench/bench_tower_methods.py --device cuda --batch 32 --classes 100 --prec fp16

Prints seconds per step (median of --steps after one warm-up step) per method.
"""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import clip  # noqa: E402
from engine.config import get_cfg_default  # noqa: E402
from trainers import clip_lora, coop, extend_cfg, maple, promptsrc  # noqa: E402


def classnames(n):
    return [f"class {i}" for i in range(n)]


def build(method, model, names):
    """(trainable parameters, step loss function images, labels -> loss)."""
    cfg = extend_cfg(get_cfg_default())
    if method == "CoOp":
        learner = coop.PromptLearner(names, model, n_ctx=16)
        custom = coop.CustomCLIP(model, learner)
        return list(learner.parameters()), lambda x, y: F.cross_entropy(custom(x).float(), y)
    if method == "MaPLe":
        learner = maple.MultiModalPromptLearner(names, model, 2, "a photo of a", 9)
        custom = maple.CustomCLIP(model, learner)
        return list(learner.parameters()), lambda x, y: F.cross_entropy(custom(x).float(), y)
    if method == "PromptSRC":
        p = cfg.TRAINER.PROMPTSRC
        learner = promptsrc.VLPromptLearner(names, model, p.N_CTX_TEXT, p.CTX_INIT)
        prompts = promptsrc.Checkpointed(learner, model, p)
        # the 60-template ensemble is computed once per run: a random stand-in here
        fixed = torch.randn(len(names), model.text_projection.shape[1], device=model.logit_scale.device)
        custom = promptsrc.CustomCLIP(model, prompts, fixed.to(model.dtype))
        prompts.to(model.logit_scale.device)
        return [p for _, p in prompts.learnt()], lambda x, y: custom.losses(x, y, 25, 10)[0]
    c = cfg.TRAINER.CLIP_LORA
    layers = clip_lora.apply_lora(model, c).to(model.logit_scale.device)
    custom = clip_lora.CustomCLIP(model, names, c.ENCODER).to(model.logit_scale.device)
    layers.train()
    return list(layers.parameters()), lambda x, y: F.cross_entropy(custom(x).float(), y)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="ViT-B/16")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=4, help="MaPLe's and PromptSRC's published batch is 4, CLIP-LoRA's 32")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--prec", default="fp32", choices=["fp32", "fp16"], help="fp16: OpenAI's fp16 matrices (GPU)")
    p.add_argument("--methods", default="CoOp,MaPLe,PromptSRC,CLIP-LoRA")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = classnames(args.classes)
    print(f"# {args.backbone} (untrained), {args.device}, {args.prec}, batch {args.batch}, {args.classes} classes, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'method':10s} {'trainable':>10s} {'s/step':>8s}")
    for method in args.methods.split(","):
        model = clip.untrained_model(args.backbone, seed=0).to(device).float()
        if args.prec == "fp16":
            clip.model.convert_weights(model)
        model.requires_grad_(False).eval()
        params, loss_fn = build(method, model, names)
        params = [q for q in params if q.is_floating_point()]
        for q in params:
            q.requires_grad_(True)
        optim = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
        size = model.visual.input_resolution
        images = torch.randn(args.batch, 3, size, size, device=device).to(model.dtype)
        labels = torch.randint(0, args.classes, (args.batch,), device=device)
        times = []
        for step in range(args.steps + 1):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            optim.zero_grad()
            loss = loss_fn(images, labels)
            loss.backward()
            optim.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if step:  # the first is warm-up
                times.append(time.perf_counter() - start)
        n = sum(q.numel() for q in params)
        print(f"{method:10s} {n:10d} {statistics.median(times):8.3f}")


if __name__ == "__main__":
    main()
