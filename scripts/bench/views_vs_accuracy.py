"""How many cached training views V does TaskRes need? Test accuracy vs FEATURE_CACHE.TRAIN_VIEWS.

A small measurement behind the default V: a synthetic image folder whose class cue is a
coloured patch at a random place (so random crops sometimes cut it, and augmentation matters),
the tests' tiny CLIP (random weights, CPU), TaskRes for EPOCHS epochs, with V in VIEWS and
V = EPOCHS (exactly the end-to-end loop's training), averaged over seeds. Views are shared
between runs (view v of an image is the same whatever V), so only max(V) views are encoded.

    python scripts/bench/views_vs_accuracy.py [--epochs 50] [--views 1 2 4 8 16 50] [--seeds 1 2 3]

Prints one row per V: mean and std test accuracy, and the encode cost ratio against the
end-to-end loop, (E*N + T) / (V*N + T).
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
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--views", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--shots", type=int, default=8)
    p.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    args = p.parse_args(argv)
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


if __name__ == "__main__":
    main()
