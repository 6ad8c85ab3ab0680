"""`make demo`: few-shot Fashion-MNIST with CLIP - zero-shot CLIP vs TaskRes at 1/4/16 shots.

The backbone: CLIP RN50 when its weights are in the cache (~/.cache/clip/RN50.pt, or
$TASKRES_CLIP_CACHE); otherwise a micro-CLIP pretrained here on Fashion-MNIST's train images
(scripts/micro_clip.py: built once into the same cache folder, a few minutes on one core, then
reused), whose captions name some classes as look-alikes, so zero-shot is well above chance and
below what the images allow. The output says which backbone ran. Images are encoded once into
the feature cache, so a second `make demo` takes seconds. The table is printed and written to
output/demo/results.md.

Methods are rows of METHODS: a label, a registered trainer, its config per shot count, and
extra opts; a method added there runs at every shot count and seed.
"""
import argparse
import dataclasses
import json
import logging
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import train  # noqa: E402
from clip import weights as clip_weights  # noqa: E402
from engine.utils import close_logger  # noqa: E402
from scripts.micro_clip import ensure_micro_clip, recipe_hash  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHOTS = (1, 4, 16)
TASKRES_CONFIGS = os.path.join(ROOT, "configs", "trainers", "TaskRes")


def taskres_config(shots):
    """TaskRes' published rule: 100 epochs up to 4 shots, 200 above."""
    return os.path.join(TASKRES_CONFIGS, "adam_lr2e-3_B256_ep100.yaml" if shots <= 4 else "adam_lr2e-3_B256_ep200.yaml")


@dataclasses.dataclass(frozen=True)
class Method:
    label: str              # the table's row name
    trainer: str            # a registered trainer
    config: object          # shots -> trainer config file
    opts: tuple = ()        # extra KEY VALUE opts
    few_shot: bool = True   # False: evaluated once (zero-shot), the same number in every column


METHODS = [
    # Zero-shot reads its input pipeline (CLIP's mean/std, bicubic) from a trainer config.
    Method("Zero-shot CLIP", "ZeroshotCLIP", taskres_config, few_shot=False),
    Method("TaskRes (alpha 0.5)", "TaskRes", taskres_config, ("TRAINER.TaskRes.RESIDUAL_SCALE", "0.5")),
]


def last_accuracy(out_dir):
    with open(os.path.join(out_dir, "results_test.json")) as f:
        return float(json.load(f)["accuracy"])


def choose_backbone(clip_cache):
    """(backbone name or file, table label, folder tag): real RN50 if cached, else the micro-CLIP."""
    rn50 = clip_weights.cached_file_path("RN50", clip_cache)
    if os.path.isfile(rn50):
        print(f"Using CLIP RN50 from {rn50}.\n")
        return "RN50", "CLIP RN50", "rn50"
    print(f"CLIP RN50 weights not found at {rn50} (put RN50.pt there, see README, for the paper's backbone).\n"
          f"Using the micro-CLIP pretrained here on Fashion-MNIST's train images instead "
          f"(built once into {clip_weights.resolve_cache_dir(clip_cache)}).\n", flush=True)
    path = ensure_micro_clip(clip_weights.resolve_cache_dir(clip_cache))
    # The recipe's hash in the folder name: results of an older micro-CLIP are never shown as this one's.
    return path, "micro-CLIP (pretrained here)", f"microclip-{recipe_hash(path)}"


def run(method, shots, seed, backbone, tag, common, output):
    """Train/evaluate one method at one shot count and seed through train.py; returns accuracy (%).

    `common` starts with flags and ends with KEY VALUE opts, so it goes last before the method's opts.
    """
    config = method.config(shots)
    if method.few_shot:
        out = os.path.join(output, method.trainer, f"{os.path.splitext(os.path.basename(config))[0]}_{tag}_{shots}shots",
                           f"seed{seed}")
        argv = ["--trainer", method.trainer, "--output-dir", out, "--config-file", config, "--seed", str(seed),
                *common, "DATASET.NUM_SHOTS", str(shots), *method.opts]
    else:
        out = os.path.join(output, method.trainer, tag)
        # NUM_SHOTS only narrows the train images the dataset writes as PNGs (60000 otherwise);
        # an evaluation-only run never reads them.
        argv = ["--trainer", method.trainer, "--eval-only", "--output-dir", out, "--config-file", config,
                "--seed", str(seed), *common, "DATASET.NUM_SHOTS", str(shots), *method.opts]
    if not os.path.isfile(os.path.join(out, "results_test.json")):
        train.main(["--backbone", backbone, *argv])
        close_logger()
    return last_accuracy(out)


def cell(values):
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=os.path.join(ROOT, "output", "demo"))
    parser.add_argument("--data", default=os.path.join(ROOT, "output", "demo", "data"))
    parser.add_argument("--clip-cache", default=None, help="CLIP cache folder (default $TASKRES_CLIP_CACHE or ~/.cache/clip)")
    parser.add_argument("--test-per-class", type=int, default=100, help="test images per class (1000 in the full set)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    args = parser.parse_args(argv)

    logging.getLogger().setLevel(logging.INFO)
    start = time.time()
    backbone, label, tag = choose_backbone(args.clip_cache)
    common = [  # flags first: train.py reads everything after the first KEY as opts
        "--root", args.data,
        "--dataset-config-file", os.path.join(ROOT, "configs", "datasets", "fashion_mnist.yaml"),
        "DATASET.TEST_SUBSET", str(args.test_per_class),
        "DATALOADER.NUM_WORKERS", str(min(4, os.cpu_count() or 1)),
        "VERBOSE", "False",
    ]
    if args.clip_cache:
        common += ["MODEL.BACKBONE.CACHE_DIR", args.clip_cache]
    rows = []
    for method in METHODS:
        if method.few_shot:
            accs = {k: [run(method, k, seed, backbone, tag, common, args.output) for seed in args.seeds] for k in SHOTS}
        else:
            zero = [run(method, SHOTS[0], args.seeds[0], backbone, tag, common, args.output)]
            accs = {k: zero for k in SHOTS}
        rows.append((method.label, accs))

    seeds = ", ".join(map(str, args.seeds))
    lines = [f"Fashion-MNIST few-shot, {label}, seed{'s' if len(args.seeds) > 1 else ''} {seeds}, "
             f"{args.test_per_class * 10} test images: accuracy (%)", "",
             "| method | " + " | ".join(f"{k}-shot" for k in SHOTS) + " |",
             "| --- | " + " | ".join("---" for _ in SHOTS) + " |"]
    for name, accs in rows:
        lines.append(f"| {name} | " + " | ".join(cell(accs[k]) for k in SHOTS) + " |")
    lines += ["", f"Backbone: {backbone}", f"Total time: {time.time() - start:.0f} s. Logs: {args.output}/*/*/log.txt"]
    table = "\n".join(lines)
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "results.md"), "w") as f:
        f.write(table + "\n")
    print("\n" + table)


if __name__ == "__main__":
    from engine.errors import UserError

    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
