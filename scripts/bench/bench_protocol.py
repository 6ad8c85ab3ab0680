"""Benchmark of the whole protocol: regular + enhanced + DG through the real workflows.

Builds synthetic stand-ins of the 11 few-shot datasets and the 4 DG targets in their real
folder layouts (the loaders of datasets/ read them as they read the real ones), with each
dataset's real class count, split sizes and typical image size times ``--scale`` (classes
and split sizes; image sizes stay real). Each split's files are hard links to a small pool of
distinct JPEGs of that size: every path is its own cache entry and is decoded and encoded
like a real image, but the pool costs seconds to write.

Then it runs, timed, the published workflows on that root:

    train_regular.sh   every dataset x shots x seed, regular base
    train_enhance.sh   the enhanced bases (StrongBase), then every dataset x shots x seed on them
    test_dg.sh         the ImageNet runs of the largest shot count on ImageNet-V2/-Sketch/-A/-R

and prints wall time per workflow and per phase summed over its runs: setup (imports, model,
dataset), encode (the feature cache filling), train (the epochs on cached features) and
evaluate (the test passes), plus the total. Each train.py run goes through a small shim (the
workflows' $PYTHON) that calls train.main in-process and records those phases in
``<run>/bench_phases.json``.

    # CPU, a few minutes: tiny CLIP (random weights), 1% of the data, 16 shots, 2 epochs
    python scripts/bench/bench_protocol.py --scale 0.01 --shots 16 --epochs 2 --backbone tiny
    # one GPU node at full scale (RN50 without its weights: speed does not depend on them)
    python scripts/bench/bench_protocol.py --scale 1 --backbone RN50 --jobs 8 --gpus 0,1,2,3,4,5,6,7
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# config name: (classes, train, val, test, typical image size (w, h)) of the real dataset
# (CoOp's splits; ImageNet: the 1.28M train folder, the 50k val folder as test)
DATASETS = {
    "oxford_pets": (37, 2944, 736, 3669, (500, 375)),
    "oxford_flowers": (102, 4093, 1633, 2463, (500, 667)),
    "fgvc_aircraft": (100, 3334, 3333, 3333, (1024, 700)),
    "dtd": (47, 2820, 1128, 1692, (500, 450)),
    "eurosat": (10, 13500, 5400, 8100, (64, 64)),
    "stanford_cars": (196, 6509, 1635, 8041, (700, 480)),
    "food101": (101, 50500, 20200, 30300, (512, 512)),
    "sun397": (397, 15880, 3970, 19850, (500, 375)),
    "caltech101": (100, 4128, 1649, 2465, (300, 250)),
    "ucf101": (101, 7639, 1898, 3783, (320, 240)),
    "imagenet": (1000, 1281167, 0, 50000, (500, 375)),
}
DG_TARGETS = {  # classes, images, typical size
    "imagenetv2": (1000, 10000, (500, 375)),
    "imagenet_sketch": (1000, 50889, (600, 500)),
    "imagenet_a": (200, 7500, (500, 375)),
    "imagenet_r": (200, 30000, (500, 500)),
}
# config name -> (dataset folder, image folder inside it, split file or None, path prefix is the image folder)
SPLIT_LAYOUT = {
    "oxford_pets": ("oxford_pets", "images", "split_zhou_OxfordPets.json"),
    "oxford_flowers": ("oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json"),
    "dtd": ("dtd", "images", "split_zhou_DescribableTextures.json"),
    "eurosat": ("eurosat", "2750", "split_zhou_EuroSAT.json"),
    "food101": ("food-101", "images", "split_zhou_Food101.json"),
    "sun397": ("sun397", "SUN397", "split_zhou_SUN397.json"),
    "caltech101": ("caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json"),
    "ucf101": ("ucf101", "UCF-101-midframes", "split_zhou_UCF101.json"),
    "stanford_cars": ("stanford_cars", "", "split_zhou_StanfordCars.json"),  # paths relative to the folder
}
POOL = 16  # distinct JPEGs per dataset; every file is a hard link to one of them


def scaled(n, scale, minimum):
    return max(minimum, int(round(n * scale)))


class Writer:
    """Hard links to a pool of distinct JPEGs of one size."""

    def __init__(self, folder, size, seed):
        rng = np.random.default_rng(seed)
        os.makedirs(folder, exist_ok=True)
        self.pool = []
        for i in range(POOL):
            path = os.path.join(folder, f"pool{i}.jpg")
            # smooth colour fields + noise: JPEG sizes close to a photo's, unlike pure noise
            base = rng.integers(0, 255, size=(3,))
            ramp = np.linspace(0, 1, size[0])[None, :, None] * rng.integers(-80, 80, size=(3,))
            arr = np.clip(base + ramp + rng.normal(0, 12, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(path, quality=90)
            self.pool.append(path)
        self.count = 0

    def put(self, path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not os.path.exists(path):
            os.link(self.pool[self.count % POOL], path)
        self.count += 1


def per_class(total, classes):
    return max(1, total // classes)


def build_split_dataset(root, name, scale, shots_max, seed):
    n_cls, n_train, n_val, n_test, size = DATASETS[name]
    classes = scaled(n_cls, scale, 2)
    # at least the largest shot count per class in train, and one val/test image per class
    counts = (max(shots_max, per_class(scaled(n_train, scale, 1), classes)),
              per_class(scaled(n_val, scale, 1), classes), per_class(scaled(n_test, scale, 1), classes))
    folder, image_sub, split_file = SPLIT_LAYOUT[name]
    ds_dir = os.path.join(root, folder)
    image_dir = os.path.join(ds_dir, image_sub) if image_sub else ds_dir
    writer = Writer(os.path.join(root, "_pool", name), size, seed)
    split = {"train": [], "val": [], "test": []}
    for c in range(classes):
        cname = f"class_{c:04d}"
        for key, n in zip(("train", "val", "test"), counts):
            for i in range(n):
                rel = os.path.join(f"images_{c:04d}" if not image_sub else cname, f"{key}_{i:05d}.jpg")
                writer.put(os.path.join(image_dir, rel))
                split[key].append([rel, c, cname])
    os.makedirs(image_dir, exist_ok=True)
    with open(os.path.join(ds_dir, split_file), "w") as f:
        json.dump(split, f)
    return classes, counts, writer.count


def build_aircraft(root, scale, shots_max, seed):
    n_cls, n_train, n_val, n_test, size = DATASETS["fgvc_aircraft"]
    classes = scaled(n_cls, scale, 2)
    counts = (max(shots_max, per_class(scaled(n_train, scale, 1), classes)),
              per_class(scaled(n_val, scale, 1), classes), per_class(scaled(n_test, scale, 1), classes))
    ds_dir = os.path.join(root, "fgvc_aircraft")
    writer = Writer(os.path.join(root, "_pool", "fgvc_aircraft"), size, seed)
    names = [f"variant {c:03d}" for c in range(classes)]
    with open(_mk(ds_dir, "variants.txt"), "w") as f:
        f.write("".join(n + "\n" for n in names))
    image_id = 1000000
    for key, n in zip(("train", "val", "test"), counts):
        lines = []
        for c in range(classes):
            for _ in range(n):
                writer.put(os.path.join(ds_dir, "images", f"{image_id}.jpg"))
                lines.append(f"{image_id} {names[c]}\n")
                image_id += 1
        with open(os.path.join(ds_dir, f"images_variant_{key}.txt"), "w") as f:
            f.writelines(lines)
    return classes, counts, writer.count


def _mk(folder, name):
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, name)


def wnids(n):
    return [f"n{10000000 + i:08d}" for i in range(n)]


def build_imagenet(root, scale, shots_max, seed):
    n_cls, n_train, _, n_test, size = DATASETS["imagenet"]
    classes = scaled(n_cls, scale, 2)
    # the few-shot sample reads only K images per class, but the loader lists the whole folder
    counts = (max(shots_max, per_class(scaled(n_train, scale, 1), classes)), 0,
              per_class(scaled(n_test, scale, 1), classes))
    ds_dir = os.path.join(root, "imagenet")
    writer = Writer(os.path.join(root, "_pool", "imagenet"), size, seed)
    ids = wnids(classes)
    with open(_mk(ds_dir, "classnames.txt"), "w") as f:
        f.writelines(f"{w} object {i}\n" for i, w in enumerate(ids))
    for w in ids:
        for i in range(counts[0]):
            writer.put(os.path.join(ds_dir, "images", "train", w, f"{w}_{i}.JPEG"))
        for i in range(counts[2]):
            writer.put(os.path.join(ds_dir, "images", "val", w, f"val_{w}_{i}.JPEG"))
    return classes, counts, writer.count


def build_dg(root, name, scale, imagenet_classes, seed):
    n_cls, n_images, size = DG_TARGETS[name]
    # the targets index ImageNet's classnames.txt: never more classes than the stand-in ImageNet
    classes = min(imagenet_classes, scaled(n_cls, scale, 2))
    per = per_class(scaled(n_images, scale, 1), classes)
    writer = Writer(os.path.join(root, "_pool", name), size, seed)
    ids = wnids(imagenet_classes)
    if name == "imagenetv2":
        classes = imagenet_classes  # folder i is class i of classnames.txt: all of them
        base = os.path.join(root, "imagenetv2", "imagenetv2-matched-frequency-format-val")
        folders = [str(i) for i in range(classes)]
    else:
        sub = {"imagenet_sketch": ("imagenet-sketch", "images"), "imagenet_a": ("imagenet-adversarial", "imagenet-a"),
               "imagenet_r": ("imagenet-rendition", "imagenet-r")}[name]
        base = os.path.join(root, *sub)
        step = max(1, imagenet_classes // classes)
        folders = ids[::step][:classes]  # A and R hold a 200-class subset
    for folder in folders:
        for i in range(per):
            writer.put(os.path.join(base, folder, f"{i}.jpg"))
    return classes, (0, 0, per), writer.count


def build_data(root, scale, shots_max, seed=0):
    """Write every stand-in under ``root``; returns {name: (classes, (train, val, test) per class, files)}."""
    info = {}
    for s, name in enumerate(DATASETS):
        if name == "imagenet":
            info[name] = build_imagenet(root, scale, shots_max, seed + s)
        elif name == "fgvc_aircraft":
            info[name] = build_aircraft(root, scale, shots_max, seed + s)
        else:
            info[name] = build_split_dataset(root, name, scale, shots_max, seed + s)
    for t, name in enumerate(DG_TARGETS):
        info[name] = build_dg(root, name, scale, info["imagenet"][0], seed + 100 + t)
    return info


# ---- the train.py shim: phases of one run ---------------------------------------------------
SHIM = """#!/usr/bin/env bash
# train.py with its phases timed (written by scripts/bench/bench_protocol.py)
[[ "$1" == train.py ]] && shift
exec {python} {bench} --as-train "$@"
"""


def as_train(argv):
    """Run train.main(argv) in-process; write setup/encode/train/evaluate seconds next to its log."""
    start = time.perf_counter()
    sys.path.insert(0, ROOT)
    import train  # noqa: PLC0415 - the shim is the only caller that needs it
    from engine.errors import UserError  # noqa: PLC0415
    from engine.features import FeatureStore  # noqa: PLC0415
    from engine.trainer import SimpleTrainer  # noqa: PLC0415

    stores, spans = [], {"evaluate": 0.0, "evaluate_encode": 0.0, "train_start": None}
    init = FeatureStore.__init__

    def tracked_init(self, *a, **k):
        init(self, *a, **k)
        stores.append(self)

    def encoded_seconds():
        return sum(s.encode_seconds for s in stores)

    original_test = SimpleTrainer.test

    def timed_test(self, *a, **k):
        t0, e0 = time.perf_counter(), encoded_seconds()
        try:
            return original_test(self, *a, **k)
        finally:
            spans["evaluate"] += time.perf_counter() - t0
            spans["evaluate_encode"] += encoded_seconds() - e0

    original_before_train = SimpleTrainer.before_train

    def timed_before_train(self, *a, **k):
        spans["train_start"] = time.perf_counter()
        return original_before_train(self, *a, **k)

    FeatureStore.__init__ = tracked_init
    SimpleTrainer.test = timed_test
    SimpleTrainer.before_train = timed_before_train
    args = train.build_parser().parse_args(argv)
    try:
        trainer = train.main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    end = time.perf_counter()
    encode = encoded_seconds()
    evaluate = spans["evaluate"] - spans["evaluate_encode"]  # test features encoded lazily count as encode
    first = spans["train_start"] if spans["train_start"] is not None else end - spans["evaluate"]
    phases = {"setup": first - start, "encode": encode, "evaluate": evaluate}
    phases["train"] = max(0.0, (end - first) - spans["evaluate"] - (encode - spans["evaluate_encode"]))
    phases["total"] = end - start
    phases["encoded_views"] = sum(s.encoded for s in stores)
    out = trainer.cfg.OUTPUT_DIR if trainer is not None else args.output_dir
    with open(os.path.join(out, "bench_phases.json"), "w") as f:
        json.dump(phases, f)
    return 0


# ---- the benchmark --------------------------------------------------------------------------
def collect(output, since):
    """Sum bench_phases.json of the runs written after ``since`` under ``output``."""
    total = {"runs": 0, "setup": 0.0, "encode": 0.0, "train": 0.0, "evaluate": 0.0, "encoded_views": 0}
    for folder, _, files in os.walk(output):
        if "bench_phases.json" in files:
            path = os.path.join(folder, "bench_phases.json")
            if os.path.getmtime(path) < since:
                continue
            with open(path) as f:
                phases = json.load(f)
            total["runs"] += 1
            for key in ("setup", "encode", "train", "evaluate", "encoded_views"):
                total[key] += phases[key]
    return total


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=0.01, help="fraction of each dataset's classes and split sizes")
    p.add_argument("--shots", default="1 2 4 8 16", help="shot counts (the protocol's: 1 2 4 8 16)")
    p.add_argument("--seeds", default="1 2 3")
    p.add_argument("--epochs", type=int, default=None, help="OPTIM.MAX_EPOCH for every run (default: the configs')")
    p.add_argument("--backbone", default="tiny",
                   help="tiny (a random-weight tiny CLIP at 224 px, for CPUs) or a CLIP name (built without its "
                        "weights: MODEL.BACKBONE.PRETRAINED False)")
    p.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when available")
    p.add_argument("--workers", type=int, default=None, help="DATALOADER.NUM_WORKERS (default: the configs')")
    p.add_argument("--jobs", type=int, default=1, help="runs side by side (the workflows' --jobs)")
    p.add_argument("--gpus", default="", help="the workflows' --gpus")
    p.add_argument("--out", default=os.path.join(ROOT, "output", "bench_protocol"))
    p.add_argument("--keep", action="store_true", help="keep the runs and cache of an earlier call (default: start cold)")
    p.add_argument("--as-train", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.as_train is not None:
        return as_train(args.as_train)
    shots = args.shots.split()
    if not args.keep and os.path.exists(args.out):
        shutil.rmtree(args.out)
    data, output, cache = (os.path.join(args.out, d) for d in ("data", "output", "cache"))
    os.makedirs(output, exist_ok=True)

    t0 = time.perf_counter()
    info = build_data(data, args.scale, max(int(k) for k in shots))
    gen_s = time.perf_counter() - t0
    print(f"stand-ins at scale {args.scale} in {gen_s:.1f} s (files are hard links, not timed below):")
    for name, (classes, counts, files) in info.items():
        print(f"  {name:16s} {classes:5d} classes  train/val/test per class {counts[0]}/{counts[1]}/{counts[2]}"
              f"  {files} files")

    opts = ["FEATURE_CACHE.DIR", cache]
    if args.epochs:
        opts += ["OPTIM.MAX_EPOCH", str(args.epochs)]
    if args.workers is not None:
        opts += ["DATALOADER.NUM_WORKERS", str(args.workers)]
    device = args.device or ("cuda" if _cuda() else "cpu")
    if device == "cpu":
        opts += ["USE_CUDA", "False"]
    if args.backbone == "tiny":
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        from clip_fixtures import save_tiny_clip  # noqa: PLC0415 - the tests' tiny real-format CLIP

        backbone = os.path.join(args.out, "tiny_clip.pt")
        if not os.path.exists(backbone):
            save_tiny_clip(backbone, vision="vit", image_resolution=224)
    else:
        backbone = args.backbone
        opts += ["MODEL.BACKBONE.PRETRAINED", "False"]
    shim = os.path.join(args.out, "train_shim.sh")
    with open(shim, "w") as f:
        f.write(SHIM.format(python=sys.executable, bench=os.path.abspath(__file__)))
    os.chmod(shim, 0o755)
    env = dict(os.environ, DATA=data, OUTPUT=output, STRONG_BASE=os.path.join(args.out, "strong_base"),
               PYTHON=shim, TR_RUNNER_PYTHON=sys.executable)
    common = ["--seeds", args.seeds, "--backbone", backbone, "--jobs", str(args.jobs)]
    if args.gpus:
        common += ["--gpus", args.gpus]
    few_shot = list(DATASETS)
    workflows = [
        ("regular", ["train_regular.sh", "--datasets", " ".join(few_shot), "--shots", args.shots]),
        ("enhanced", ["train_enhance.sh", "--datasets", " ".join(few_shot), "--shots", args.shots]),
        ("dg", ["test_dg.sh", "--shots", str(max(int(k) for k in shots)), "--eval-cfg", "generalization_rn50"]),
    ]
    rows = []
    for name, cmd in workflows:
        start, wall0 = time.time(), time.perf_counter()
        proc = subprocess.run(["bash", os.path.join(ROOT, cmd[0]), *cmd[1:], *common, "--", *opts],
                              cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - wall0
        if proc.returncode != 0:
            print(proc.stderr[-4000:], file=sys.stderr)
            raise SystemExit(f"error: {cmd[0]} failed (exit {proc.returncode}); its runs are under {output}")
        rows.append((name, wall, collect(output, start)))

    print(f"\nprotocol: 11 datasets x shots [{args.shots}] x seeds [{args.seeds}], regular + enhanced + DG; "
          f"backbone {args.backbone}, device {device}, jobs {args.jobs}, epochs {args.epochs or 'config'}")
    print(f"{'workflow':10s} {'runs':>5s} {'wall s':>8s} {'setup s':>8s} {'encode s':>9s} {'train s':>8s} "
          f"{'eval s':>8s} {'views':>8s}")
    totals = {"runs": 0, "wall": 0.0, "setup": 0.0, "encode": 0.0, "train": 0.0, "evaluate": 0.0, "encoded_views": 0}
    for name, wall, t in rows:
        print(f"{name:10s} {t['runs']:5d} {wall:8.1f} {t['setup']:8.1f} {t['encode']:9.1f} {t['train']:8.1f} "
              f"{t['evaluate']:8.1f} {t['encoded_views']:8d}")
        totals["wall"] += wall
        for key in ("runs", "setup", "encode", "train", "evaluate", "encoded_views"):
            totals[key] += t[key]
    print(f"{'total':10s} {totals['runs']:5d} {totals['wall']:8.1f} {totals['setup']:8.1f} {totals['encode']:9.1f} "
          f"{totals['train']:8.1f} {totals['evaluate']:8.1f} {totals['encoded_views']:8d}")
    print("(phase columns sum over runs; with --jobs > 1 they exceed the wall time)")
    with open(os.path.join(args.out, "bench_protocol.json"), "w") as f:
        json.dump({"args": vars(args), "workflows": [{"name": n, "wall_s": w, **t} for n, w, t in rows],
                   "total": totals}, f, indent=1)
    return 0


def _cuda():
    import torch  # noqa: PLC0415 - only to pick the default device

    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())
