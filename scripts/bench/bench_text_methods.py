"""Benchmark: one cached-feature training step of each text-side method (KgCoOp, ProGrad, CLAP)
beside CoOp's, and LP++'s whole fit, on an untrained CLIP of real size (weights do not change
the speed).

Each step is the trainer's math on a batch of cached image features [B, D] (what the feature
cache serves; the image tower never runs): CoOp = text encoder over every class + cross-entropy;
KgCoOp adds its penalty (no extra text pass: the hand-crafted features are computed once);
ProGrad adds the zero-shot teacher's logits and a second backward pass with the per-parameter
projection; CLAP is a linear probe (no text encoder at all). LP++ fits full-batch on N = K x shots
features for EPOCHS epochs. Prints milliseconds per step (median of STEPS after a warm-up) and the
ratio to CoOp's.

    python scripts/bench/bench_text_methods.py                         # 10 classes, batch 32, CPU
    python scripts/bench/bench_text_methods.py --classes 100 --device cuda
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
from trainers import clap, coop, kgcoop, lp_plus_plus as lpp, prograd  # noqa: E402
from trainers.clip_trainer import CosineClassifier  # noqa: E402


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch", type=int, default=32, help="CoOp/KgCoOp/ProGrad configs: 32 (KgCoOp 128); CLAP 256")
    p.add_argument("--backbone", default="RN50", help="architecture of the untrained CLIP")
    p.add_argument("--n-ctx", type=int, default=16)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--shots", type=int, default=16, help="LP++: features per class")
    p.add_argument("--epochs", type=int, default=300, help="LP++: full-batch epochs")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None)
    return p


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(step, steps, device):
    step()  # warm-up
    times = []
    for _ in range(steps):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = clip.untrained_model(args.backbone, seed=0).float().eval().to(device).requires_grad_(False)
    names = [f"object {i}" for i in range(args.classes)]
    torch.manual_seed(0)
    feats = torch.randn(args.batch, model.embed_dim, device=device)
    labels = torch.randint(0, args.classes, (args.batch,), device=device)
    template = "a photo of a {}."

    def prompt_model():
        learner = coop.PromptLearner(names, model, n_ctx=args.n_ctx).to(device)
        return coop.CustomCLIP(model, learner), learner, torch.optim.SGD(learner.parameters(), lr=0.002, momentum=0.9)

    net, learner, opt = prompt_model()

    def coop_step():
        loss = F.cross_entropy(net(feats), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()

    hand = kgcoop.hand_crafted_features(model, names, template).to(device)

    def kgcoop_step():
        text = net.text_features()
        loss = F.cross_entropy(net(feats, text), labels) + 8.0 * kgcoop.knowledge_gap(text, hand)
        opt.zero_grad()
        loss.backward()
        opt.step()

    teacher = CosineClassifier(hand, model.logit_scale).to(device)

    def prograd_step():
        with torch.no_grad():
            zs = teacher(feats)
        out = net(feats)
        xe, kl = F.cross_entropy(out, labels), prograd.distillation_loss(out, zs, 1.0)
        opt.zero_grad()
        kl.backward(retain_graph=True)
        kl_grad = learner.ctx.grad.clone()
        opt.zero_grad()
        xe.backward()
        learner.ctx.grad = prograd.project_gradient(learner.ctx.grad, kl_grad, 1.0)
        opt.step()

    probe = clap.ClassAdaptiveProbe(hand, model.logit_scale).to(device)
    probe.alpha_constraint.fill_(0.5)
    probe_opt = torch.optim.SGD([probe.prototypes], lr=0.1)
    clap_feats = torch.randn(256, model.embed_dim, device=device)
    clap_labels = torch.randint(0, args.classes, (256,), device=device)

    def clap_step():
        loss = F.cross_entropy(probe(clap_feats), clap_labels) + probe.constraint("l2")
        probe_opt.zero_grad()
        loss.backward()
        probe_opt.step()

    print(f"{args.classes} classes, batch {args.batch} (CLAP 256), N_CTX {args.n_ctx}, untrained {args.backbone}, "
          f"{device}, {torch.get_num_threads()} threads; median of {args.steps} steps")
    reference = timed(coop_step, args.steps, device)
    print(f"  CoOp     {reference:9.2f} ms/step")
    for name, step in (("KgCoOp", kgcoop_step), ("ProGrad", prograd_step), ("CLAP", clap_step)):
        ms = timed(step, args.steps, device)
        print(f"  {name:8s} {ms:9.2f} ms/step  ({ms / reference:.2f}x CoOp)")

    n = args.classes * args.shots
    lp_feats = F.normalize(torch.randn(n, model.embed_dim, device=device), dim=-1)
    lp_labels = torch.arange(n, device=device) % args.classes
    text = hand.t().contiguous()
    sync(device)
    start = time.perf_counter()
    lpp.fit_lp_plus_plus(lp_feats, lp_labels, lp_feats, lp_labels, text, args.classes, args.epochs,
                         torch.zeros(args.classes, device=device))
    sync(device)
    seconds = time.perf_counter() - start
    print(f"  LP++     {1000 * seconds:9.2f} ms for the whole fit ({args.epochs} full-batch epochs on {n} features: "
          f"{1000 * seconds / args.epochs:.3f} ms/epoch)")


if __name__ == "__main__":
    main()
