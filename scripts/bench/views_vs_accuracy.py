"""How many cached training views V do the few-shot trainers need? Test accuracy vs FEATURE_CACHE.TRAIN_VIEWS.

The measurement behind the default V. Two tasks:

    --task fmnist     (the evidence) Fashion-MNIST in the demo's layout (scripts/demo.py: the
                      dataset config, 100 test images per class) on the micro-CLIP pretrained on
                      its train images (scripts/micro_clip.py; a model that has learned
                      something), TaskRes (alpha 0.5, the demo's row) and CoOp with their
                      published configs (TaskRes: Adam, batch 256, 100 epochs up to 4 shots, 200
                      above; CoOp: SGD, batch 32, 200 epochs, 50 at 1 shot)
    --task synthetic  a synthetic folder whose class cue is a coloured patch at a random place
                      (random crops sometimes cut it), the tests' tiny random-weight CLIP, TaskRes

Each method runs with V in VIEWS and V = its epochs (exactly the end-to-end loop's training),
over seeds. Views are shared between runs (view v of an image is the same whatever V and
whichever method, the input pipeline being the same), so only max(V) views are encoded.

    python scripts/bench/views_vs_accuracy.py --task fmnist --shots 16 --seeds 1 2 3 \
        --views 1 2 4 8 16 32 --methods TaskRes CoOp --clip-cache /tmp/views_clip
    python scripts/bench/views_vs_accuracy.py --task synthetic --shots 8 --views 1 2 4 8 16 [--epochs 50]

Prints one row per method and V: mean and std test accuracy, and the encode cost ratio against
the end-to-end loop, (E*N + T) / (V*N + T).
"""
import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

CONFIG = """\
DATASET: {{NAME: ImageFolder}}
DATALOADER: {{TRAIN_X: {{BATCH_SIZE: 32}}, TEST: {{BATCH_SIZE: 100}}, NUM_WORKERS: 0}}
INPUT:
  SIZE: (32, 32)
  INTERPOLATION: bicubic
  TRANSFORMS: [random_resized_crop, random_flip, normalize]
OPTIM: {{NAME: adam, LR: 0.01, MAX_EPOCH: {epochs}, LR_SCHEDULER: cosine, WARMUP_EPOCH: 1,
        WARMUP_TYPE: constant, WARMUP_CONS_LR: 1.0e-5}}
TRAIN: {{PRINT_FREQ: 1000}}
MODEL: {{BACKBONE: {{NAME: "{clip}"}}}}
"""


def make_folder(root, classes, per_class, size=48, patch=24, seed=0):
    """<root>/<class>/<i>.jpg: noise plus a class-coloured square patch at a random place."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(40, 216, (classes, 3))
    for c in range(classes):
        folder = os.path.join(root, f"class{c}")
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            img = rng.normal(128, 25, (size, size, 3))
            y, x = rng.integers(0, size - patch + 1, 2)
            img[y:y + patch, x:x + patch] = palette[c] + rng.normal(0, 10, 3)
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(os.path.join(folder, f"{i}.jpg"))
    return root


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=["fmnist", "synthetic"], default="fmnist")
    p.add_argument("--epochs", type=int, default=50, help="synthetic task only (fmnist: the published configs')")
    p.add_argument("--views", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--classes", type=int, default=10, help="synthetic task only")
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--methods", nargs="+", default=["TaskRes", "CoOp"], help="fmnist task only")
    p.add_argument("--test-per-class", type=int, default=100, help="fmnist task only")
    p.add_argument("--clip-cache", default=None, help="fmnist: folder of the micro-CLIP (built there if absent)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    args = p.parse_args(argv)
    if args.task == "fmnist":
        return fmnist(args)
    views = sorted(set(args.views) | {args.epochs})

    import train
    from clip_fixtures import save_tiny_clip
    from engine.utils import close_logger

    work = args.out or tempfile.mkdtemp(prefix="views_vs_accuracy-")
    os.environ["TASKRES_FEATURE_CACHE"] = os.path.join(work, "cache")
    data = make_folder(os.path.join(work, "data"), args.classes, per_class=max(40, 3 * args.shots))
    clip_path = os.path.join(work, "tiny_vit.pt")
    if not os.path.exists(clip_path):
        save_tiny_clip(clip_path, vision="vit")
    cfg = os.path.join(work, "cfg.yaml")
    with open(cfg, "w") as f:
        f.write(CONFIG.format(epochs=args.epochs, clip=clip_path))

    acc, sizes = {}, None
    for v in reversed(views):  # the largest V first: it encodes every view the others reuse
        for seed in args.seeds:
            out = os.path.join(work, "runs", f"v{v}_seed{seed}")
            argv_run = ["--root", data, "--seed", str(seed), "--trainer", "TaskRes", "--config-file", cfg,
                        "--output-dir", out, "DATASET.NUM_SHOTS", str(args.shots),
                        "FEATURE_CACHE.TRAIN_VIEWS", str(v)]
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    trainer = train.main(argv_run)
            finally:
                close_logger()
            with open(os.path.join(out, "results_test.json")) as f:
                acc.setdefault(v, []).append(json.load(f)["accuracy"])
            sizes = len(trainer.dm.dataset.train_x), len(trainer.dm.dataset.test)
    n, t = sizes
    e = args.epochs
    print(f"TaskRes, tiny CLIP (random ViT), {args.classes} classes x {args.shots} shots (N={n}), "
          f"T={t} test images, E={e} epochs, seeds {args.seeds}")
    print(f"{'V':>4}  {'test acc % (mean +- std)':>26}  {'encode cost vs end-to-end':>26}")
    for v in views:
        mean = statistics.mean(acc[v])
        std = statistics.stdev(acc[v]) if len(acc[v]) > 1 else 0.0
        ratio = (e * n + t) / (v * n + t)
        tag = "  (= end-to-end training)" if v == e else ""
        print(f"{v:>4}  {mean:>18.1f} +- {std:<4.1f}  {ratio:>24.1f}x{tag}")


METHOD_CONFIGS = {
    # (trainer, shots -> (config file, epochs), extra opts): the demo's TaskRes row, CoOp's published schedule.
    "TaskRes": ("TaskRes", lambda k: ("TaskRes/adam_lr2e-3_B256_ep100.yaml", 100) if k <= 4
                else ("TaskRes/adam_lr2e-3_B256_ep200.yaml", 200), ["TRAINER.TaskRes.RESIDUAL_SCALE", "0.5"]),
    "CoOp": ("CoOp", lambda k: ("CoOp/vit_b32_ep50.yaml", 50) if k == 1 else ("CoOp/vit_b32.yaml", 200), []),
}


def run_table(rows, title, n, t):
    """Print one row per (method, V, epochs, accuracies)."""
    print(title)
    print(f"{'method':>8} {'V':>4}  {'test acc % (mean +- std)':>26}  {'encode cost vs end-to-end':>26}")
    for method, v, e, accs in rows:
        mean = statistics.mean(accs)
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        ratio = (e * n + t) / (v * n + t)
        tag = "  (= end-to-end training)" if v == e else ""
        print(f"{method:>8} {v:>4}  {mean:>18.1f} +- {std:<4.1f}  {ratio:>24.1f}x{tag}", flush=True)


def fmnist(args):
    import train
    from engine.utils import close_logger
    from scripts.micro_clip import ensure_micro_clip

    work = args.out or tempfile.mkdtemp(prefix="views_vs_accuracy-")
    os.environ["TASKRES_FEATURE_CACHE"] = os.path.join(work, "cache")
    clip_cache = args.clip_cache or os.path.join(work, "clip")
    backbone = ensure_micro_clip(clip_cache)
    configs = os.path.join(ROOT, "configs", "trainers")
    common = ["--root", os.path.join(work, "data"),
              "--dataset-config-file", os.path.join(ROOT, "configs", "datasets", "fashion_mnist.yaml"),
              "DATASET.TEST_SUBSET", str(args.test_per_class), "DATASET.NUM_SHOTS", str(args.shots),
              "DATALOADER.NUM_WORKERS", str(args.workers), "VERBOSE", "False"]
    plans = {m: METHOD_CONFIGS[m][1](args.shots) for m in args.methods}  # method -> (config, epochs)
    # Ascending V, every method at each V: the rows come in cheapest first (a cut-short run still
    # leaves a table), and each V encodes only the views the smaller ones did not.
    steps = sorted({(v, m) for m in args.methods for v in set(args.views) | {plans[m][1]}})
    acc = {}
    for v, method in steps:
        trainer_name, _, opts = METHOD_CONFIGS[method]
        config, epochs = plans[method]
        for seed in args.seeds:
            out = os.path.join(work, "runs", method, f"{args.shots}shots_v{v}_seed{seed}")
            if not os.path.isfile(os.path.join(out, "results_test.json")):
                argv_run = ["--backbone", backbone, "--trainer", trainer_name, "--seed", str(seed),
                            "--config-file", os.path.join(configs, config), "--output-dir", out,
                            *common, *opts, "FEATURE_CACHE.TRAIN_VIEWS", str(v)]
                try:
                    with contextlib.redirect_stdout(io.StringIO()):
                        train.main(argv_run)
                finally:
                    close_logger()
            with open(os.path.join(out, "results_test.json")) as f:
                acc.setdefault((method, v), []).append(json.load(f)["accuracy"])
            print(f"{method} V={v} seed {seed}: {acc[method, v][-1]:.1f}", file=sys.stderr, flush=True)
    rows = [(m, v, plans[m][1], acc[m, v]) for m in args.methods for v in sorted(v for mm, v in acc if mm == m)]
    n, t = 10 * args.shots, 10 * args.test_per_class  # Fashion-MNIST has 10 classes
    run_table(rows, f"Fashion-MNIST, micro-CLIP ({backbone}), 10 classes x {args.shots} shots (N={n}), "
                    f"T={t} test images, seeds {args.seeds}", n, t)


if __name__ == "__main__":
    main()
