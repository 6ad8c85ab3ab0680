"""Experiment: TaskRes with a regular, a target-enhanced and a source-enhanced (multitask) base.

On Fashion-MNIST with a given CLIP checkpoint (the demo's micro-CLIP), the target is the "new"
half of the classes (DATASET.SUBSAMPLE_CLASSES new) and the source the "base" half, so the
source-enhanced base is tuned on classes the target does not have (the setting of issue 11's
multitask enhanced base, with one source task: Fashion-MNIST is the only dataset here that the
micro-CLIP has learned anything about). Prints a table of TaskRes test accuracy (mean ± std
over seeds) per base and shot count.

    python scripts/bench/mt_enhanced_base.py MICRO_CLIP.pt [--out DIR] [--shots 4 16] [--seeds 1 2 3]
"""
import argparse
import os
import re
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import train  # noqa: E402
from engine.utils import close_logger  # noqa: E402


def run(*argv):
    try:
        train.main([str(a) for a in argv])
    finally:
        close_logger()


def last_accuracy(out):
    with open(os.path.join(out, "log.txt")) as f:
        return float(re.findall(r"\* accuracy: ([\d.]+)%", f.read())[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("clip", help="CLIP checkpoint (OpenAI format), e.g. the micro-CLIP")
    p.add_argument("--out", default=os.path.join(ROOT, "output", "mt_enhanced_base"))
    p.add_argument("--shots", type=int, nargs="+", default=[4, 16])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--source-shots", type=int, default=16)
    p.add_argument("--test-per-class", type=int, default=60)
    args = p.parse_args(argv)
    out = args.out
    common = ["--root", os.path.join(out, "data"), "--backbone", os.path.abspath(args.clip),
              "DATASET.TEST_SUBSET", args.test_per_class, "DATALOADER.NUM_WORKERS", 0, "VERBOSE", False,
              "FEATURE_CACHE.DIR", os.path.join(out, "features")]
    sb_cfg = os.path.join(ROOT, "configs", "trainers", "StrongBase", "adam_lr2e-4_ep50.yaml")
    tag = os.path.splitext(os.path.basename(args.clip))[0].lower().replace("-", "")

    # source-enhanced: the projection tuned on the base classes (MVLPT's multitask data path)
    src_root = os.path.join(out, "strong_base_source")
    src_file = os.path.join(src_root, "FashionMNIST", f"{tag}_{args.source_shots}shots", "model.pth.tar")
    if not os.path.exists(src_file):
        run("--trainer", "StrongBase", "--seed", 1, "--config-file", sb_cfg, "--output-dir", os.path.join(out, "sb_source"),
            "--dataset", "FashionMNIST", "--dataset-coop", "--multi-task", "--shots", args.source_shots, *common,
            "DATASET.SUBSAMPLE_CLASSES", "base", "STRONG_BASE.ROOT", src_root)
    table = {}
    for k in args.shots:
        # target-enhanced: tuned on the target's own few-shot data (seed 1, as the workflows)
        tgt_root = os.path.join(out, "strong_base_target")
        tgt_file = os.path.join(tgt_root, "FashionMNIST", f"{tag}_{k}shots", "model.pth.tar")
        if not os.path.exists(tgt_file):
            run("--trainer", "StrongBase", "--seed", 1, "--config-file", sb_cfg,
                "--output-dir", os.path.join(out, f"sb_target_{k}"), "--dataset", "FashionMNIST", "--dataset-coop",
                "--shots", k, *common, "DATASET.SUBSAMPLE_CLASSES", "new", "STRONG_BASE.ROOT", tgt_root)
        cfg = "adam_lr2e-3_B256_ep100" if k <= 4 else "adam_lr2e-3_B256_ep200"
        for base, file in (("regular", "none"), ("target-enhanced", tgt_file), ("source-enhanced", src_file)):
            accs = []
            for seed in args.seeds:
                run_dir = os.path.join(out, "TaskRes", f"{base}_{k}shots", f"seed{seed}")
                if not os.path.exists(os.path.join(run_dir, "results_test.json")):
                    run("--trainer", "TaskRes", "--seed", seed, "--output-dir", run_dir, "--enhanced-base", file,
                        "--config-file", os.path.join(ROOT, "configs", "trainers", "TaskRes", f"{cfg}.yaml"),
                        "--dataset", "FashionMNIST", "--dataset-coop", "--shots", k, *common,
                        "DATASET.SUBSAMPLE_CLASSES", "new", "TRAINER.TaskRes.RESIDUAL_SCALE", 0.5)
                accs.append(last_accuracy(run_dir))
            table[(base, k)] = accs
    print(f"\nTaskRes on Fashion-MNIST's new classes (5), {args.test_per_class} test images per class, "
          f"seeds {args.seeds}: accuracy (%) mean ± std")
    print("| base | " + " | ".join(f"{k}-shot" for k in args.shots) + " |")
    print("| --- | " + " | ".join("---" for _ in args.shots) + " |")
    for base in ("regular", "target-enhanced", "source-enhanced"):
        cells = []
        for k in args.shots:
            accs = table[(base, k)]
            std = statistics.pstdev(accs) if len(accs) > 1 else 0.0
            cells.append(f"{statistics.mean(accs):.1f} ± {std:.1f}")
        print(f"| {base} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
