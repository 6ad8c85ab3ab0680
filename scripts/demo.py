"""`make demo`: few-shot Fashion-MNIST with CLIP - TaskRes beside the paper's baselines at 1/4/16 shots.

The backbone: CLIP RN50 when its weights are in the cache (~/.cache/clip/RN50.pt, or
$TASKRES_CLIP_CACHE); otherwise a micro-CLIP pretrained here on Fashion-MNIST's train images
(scripts/micro_clip.py: built once into the same cache folder, a few minutes on one core, then
reused; the same bytes on every machine), whose captions misname some classes, so zero-shot is
well above chance and below what the images allow. The output says which backbone ran, with the
micro-CLIP's recipe hash and sha256. Images are encoded once into the feature cache, and finished
runs are skipped, so a second `make demo` takes seconds. The table is printed and written to
output/demo/results.md, the figure to output/demo/results.png.

The methods are the names in METHODS: a registered trainer, or "<Trainer>-<variant>". A method's
label, config rule and whether it trains come from its trainer's declared `protocol`
(engine/protocol.py) where it declares them; SETTINGS holds what the demo adds (labels and config
rules of trainers that declare none yet, shortened schedules, TaskRes' alpha, the enhanced base).
A name added to METHODS runs at every shot count and seed. Each run goes through train.py's main
in this process.
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
from engine import TRAINER_REGISTRY  # noqa: E402
from engine.errors import ConfigError  # noqa: E402
from engine.protocol import Protocol  # noqa: E402
from engine.utils import close_logger  # noqa: E402
from engine.protocol import coop_epochs, coop_schedule  # noqa: E402
from trainers.strong_base import strong_base_path  # noqa: E402
from trainers.taskres import taskres_schedule  # noqa: E402
from scripts.micro_clip import ensure_micro_clip, metadata  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHOTS = (1, 4, 16)
TRAINER_CONFIGS = os.path.join(ROOT, "configs", "trainers")
DATASET = "fashion_mnist"  # the dataset config stem a protocol's config rule is asked about
FAMILY = "rn50"            # the configs the demo runs (the micro-CLIP stands in for RN50)


def taskres_config(shots):
    """TaskRes' declared rule (its protocol): 100 epochs up to 4 shots, 200 above."""
    return os.path.join(TRAINER_CONFIGS, "TaskRes", taskres_schedule("fashion_mnist", shots) + ".yaml")


def coop_schedule_config(trainer):
    """CoOp's per-shot schedule (CLIP-Adapter runs with it too): rn50_ep50 / rn50_ep100 / rn50."""
    def config(shots):
        return os.path.join(TRAINER_CONFIGS, trainer, coop_schedule(DATASET, shots, "rn50") + ".yaml")
    return config


def fixed_config(path):
    return lambda shots: os.path.join(TRAINER_CONFIGS, path)


# The demo's shortening of CoOp's schedule (50 / 100 / 200 epochs at 1 / 4 / 16 shots in its paper):
# on the cached features each step still runs the text tower forward and backward, so CoOp would
# be the demo's largest cost. A time budget, not a finding: the full schedule was not compared.
COOP_EPOCH_SHARE = 5


def coop_opts(shots):
    return ("OPTIM.MAX_EPOCH", str(coop_epochs(DATASET, shots) // COOP_EPOCH_SHARE))


@dataclasses.dataclass(frozen=True)
class Setting:
    """What the demo adds to a method's protocol; every field may stay at its default."""
    label: str = ""            # used when the trainer's protocol declares no label
    config: object = None      # shots -> trainer config file; None: the protocol's rule
    opts: object = ()          # extra KEY VALUE opts, or shots -> them
    few_shot: object = None    # None: the protocol says (trains, and not a training-free trainer)
    enhanced: bool = False     # True: first StrongBase tunes the enhanced base this run starts from
    shortened: str = ""        # what the demo runs shorter than the method's paper, said under the table


TASKRES_ALPHA = ("TRAINER.TaskRes.RESIDUAL_SCALE", "0.5")  # the paper's alpha for most datasets

# The demo's methods, in table order. A new method joins by adding its name here.
# The text-side methods papers of 2023-24 compare against (cached features: seconds a run). The
# tower-tuning ones (MaPLe, PromptSRC, CLIP-LoRA) train end to end and join by name (`--methods ...
# MaPLe`), far beyond the demo's 10-minute budget on 2 CPU cores.
RECENT_METHODS = ["KgCoOp", "ProGrad", "CLAP", "LPPlusPlus"]
METHODS = ["ZeroshotCLIP", "LinearProbe", "CoOp", "CLIP_Adapter", "TipAdapterF", *RECENT_METHODS, "TaskRes",
           "TaskRes-enhanced"]

SETTINGS = {
    # Zero-shot reads its input pipeline (CLIP's mean/std, bicubic) from a trainer config.
    "ZeroshotCLIP": Setting("Zero-shot CLIP", taskres_config),
    "LinearProbe": Setting("Linear probe", fixed_config("LinearProbe/rn50.yaml")),
    "CoOp": Setting("CoOp", coop_schedule_config("CoOp"),
                    lambda shots: ("TRAINER.COOP.N_CTX", "16", "TRAINER.COOP.CSC", "False",
                                   "TRAINER.COOP.CLASS_TOKEN_POSITION", "end", *coop_opts(shots)),
                    shortened=f"CoOp: 1/{COOP_EPOCH_SHARE} of its epochs (10 / 20 / 40 instead of 50 / 100 / 200)"),
    "CLIP_Adapter": Setting("CLIP-Adapter", coop_schedule_config("CLIP_Adapter")),
    # CoOp's prompt learner with one more loss term: the demo shortens them as it shortens CoOp
    "KgCoOp": Setting(opts=coop_opts, shortened=f"KgCoOp, ProGrad: CoOp's epochs / {COOP_EPOCH_SHARE}"),
    "ProGrad": Setting(opts=coop_opts),
    # Tip-Adapter publishes settings per dataset; its ImageNet ones are its trainer's defaults.
    "TipAdapterF": Setting("Tip-Adapter-F", fixed_config("TipAdapterF/rn50_imagenet.yaml")),
    "TaskRes": Setting("TaskRes", taskres_config, TASKRES_ALPHA),
    "TaskRes-enhanced": Setting("TaskRes (enhanced base)", taskres_config, TASKRES_ALPHA, enhanced=True),
}


@dataclasses.dataclass(frozen=True)
class Method:
    """One row of the table: a method name of METHODS resolved against its protocol and SETTINGS."""
    name: str
    trainer: str
    label: str
    config: object          # shots -> trainer config file
    opts: object = ()       # extra KEY VALUE opts, or shots -> them
    few_shot: bool = True   # False: evaluated once (zero-shot), the same number in every column
    enhanced: bool = False
    shortened: str = ""

    def opts_for(self, shots):
        return tuple(self.opts(shots) if callable(self.opts) else self.opts)


def protocol_config(trainer, protocol):
    """shots -> config file from a protocol's rule (a stem, a function, or the folder's only yaml)."""
    folder = os.path.join(TRAINER_CONFIGS, protocol.config_dir or trainer)

    def config(shots):
        rule = protocol.config
        if rule is None:
            stems = sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".yaml")) if os.path.isdir(folder) else []
            if len(stems) != 1:
                raise ConfigError(f"{trainer} declares no config rule and {folder} holds {len(stems)} yaml files, "
                                  f"not one: add its rule to SETTINGS in scripts/demo.py or to its protocol.")
            return os.path.join(folder, stems[0] + ".yaml")
        stem = rule(DATASET, shots, FAMILY) if callable(rule) else rule
        return os.path.join(folder, stem + ".yaml")
    return config


def resolve(name):
    """The Method a name of METHODS stands for (an unknown trainer name is a ConfigError)."""
    import trainers  # noqa: F401  (registers the trainers)

    trainer, _, variant_name = name.partition("-")
    cls = TRAINER_REGISTRY.get(trainer, hint=f" (a name in METHODS of {os.path.relpath(__file__, ROOT)})")
    protocol = getattr(cls, "protocol", None) or Protocol()
    setting = SETTINGS.get(name, Setting())
    variant = next((v for v in protocol.variants if v.name == variant_name), None)
    declared = (variant.label if variant else "") or (protocol.label if not variant_name else "")
    label = setting.label or declared or name  # the demo's own row name first (its README table)
    few_shot = setting.few_shot
    if few_shot is None:
        few_shot = protocol.trains and not getattr(cls, "training_free", False)
    opts = setting.opts
    if variant is not None and variant.opts:
        alpha_rule = protocol.extra.get("alpha")
        alpha = str(alpha_rule(DATASET)) if alpha_rule else None
        pairs = [(key, alpha if value == "{alpha}" and alpha else value)
                 for key, value in zip(variant.opts[::2], variant.opts[1::2])]
        base = opts

        def opts(shots, base=base, pairs=pairs):  # the demo's opts, then the variant's keys it does not set
            own = tuple(base(shots) if callable(base) else base)
            return (*own, *(x for key, value in pairs if key not in own[::2] for x in (key, value)))
    return Method(name, trainer, label, setting.config or protocol_config(trainer, protocol), opts, few_shot,
                  setting.enhanced, setting.shortened)


def methods(names=None):
    """The table's rows: ``names`` (default METHODS; the word "recent" stands for RECENT_METHODS)."""
    names = METHODS if names is None else names
    expanded = [n for name in names for n in (RECENT_METHODS if name == "recent" else [name])]
    return [resolve(name) for name in expanded]


STRONG_BASE_CONFIG = os.path.join(TRAINER_CONFIGS, "StrongBase", "adam_lr2e-4_ep50.yaml")


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
    meta = metadata(path)
    print(f"micro-CLIP {path}: recipe {meta['recipe_hash']}, sha256 {meta['sha256']}\n", flush=True)
    # The recipe's hash in the folder name: results of an older micro-CLIP are never shown as this one's.
    return path, f"micro-CLIP {meta['recipe_hash']} (pretrained here)", f"microclip-{meta['recipe_hash']}"


def run_once(out, argv):
    """train.py's main in this process (no interpreter start-up per run), skipped when finished."""
    if not os.path.isfile(os.path.join(out, "results_test.json")):
        train.main(argv)
        close_logger()
    return out


def own_opts(args, trainer):
    """``args`` without the ``TRAINER.<group>.KEY VALUE`` pairs that ``trainer`` does not read: the extra
    opts reach every method, and train.py refuses another trainer's key (it would be ignored)."""
    from engine import TRAINER_REGISTRY
    from engine.checks import drop_unread_trainer_keys

    return drop_unread_trainer_keys(args, trainer, TRAINER_REGISTRY)


def enhanced_base(shots, backbone, common, output):
    """StrongBase's enhanced base for this shot count (seed 1, as scripts/taskres/strong_base.sh)."""
    root = os.path.join(output, "strong_base")
    out = os.path.join(output, "StrongBase", f"{shots}shots")
    run_once(out, ["--backbone", backbone, "--trainer", "StrongBase", "--output-dir", out,
                   "--config-file", STRONG_BASE_CONFIG, "--seed", "1", *own_opts(common, "StrongBase"),
                   "DATASET.NUM_SHOTS", str(shots),
                   "STRONG_BASE.ROOT", root])
    return strong_base_path(root, "FashionMNIST", backbone, shots)


def run(method, shots, seed, backbone, tag, common, output):
    """Train/evaluate one method at one shot count and seed through train.py; returns accuracy (%).

    `common` starts with flags and ends with KEY VALUE opts, so it goes last before the method's opts.
    """
    config = method.config(shots)
    flags = ["--backbone", backbone, "--trainer", method.trainer, "--config-file", config, "--seed", str(seed)]
    if method.enhanced:
        flags += ["--enhanced-base", enhanced_base(shots, backbone, common, output)]
    if method.few_shot:
        name = os.path.splitext(os.path.basename(config))[0] + ("_enhanced" if method.enhanced else "")
        out = os.path.join(output, method.trainer, f"{name}_{tag}_{shots}shots", f"seed{seed}")
    else:
        out = os.path.join(output, method.trainer, tag)
        # NUM_SHOTS only narrows the train images the dataset writes as PNGs (60000 otherwise);
        # an evaluation-only run never reads them.
        flags.append("--eval-only")
    run_once(out, [*flags, "--output-dir", out, *own_opts(common, method.trainer), "DATASET.NUM_SHOTS", str(shots),
                   *method.opts_for(shots)])
    return last_accuracy(out)


def write_figure(rows, path, title, caption):
    """Accuracy vs shots (log2 axis), one line per few-shot method with its seed std as error bars,
    and zero-shot as a dashed reference line; `caption` (backbone, seeds, shortening) under the axes."""
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 5.0))
    shots = sorted(next(iter(rows))[1])
    for method, accs in rows:
        if not method.few_shot:
            ax.axhline(statistics.mean(next(iter(accs.values()))), color="grey", linestyle="--", linewidth=1.2,
                       label=method.label)
            continue
        mean = [statistics.mean(accs[k]) for k in shots]
        std = [statistics.stdev(accs[k]) if len(accs[k]) > 1 else 0.0 for k in shots]
        ax.errorbar(shots, mean, yerr=std, marker="o", markersize=4, capsize=3, elinewidth=0.8,
                    label=method.label, linestyle="--" if method.enhanced else "-")
    ax.set_xscale("log", base=2)
    ax.set_xticks(shots)
    ax.set_xticklabels([str(k) for k in shots])
    ax.set_xlabel("shots per class")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.text(0.01, 0.01, caption, fontsize=7, wrap=True, va="bottom")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], help="seeds (default 1; the paper averages 1 2 3)")
    parser.add_argument("opts", nargs="*", help="extra KEY VALUE config opts for every run (after the flags; a "
                                                "TRAINER.<group> key only for the methods that read it)")
    parser.add_argument("--shots", type=int, nargs="+", default=list(SHOTS), help="shot counts (default 1 4 16)")
    parser.add_argument("--methods", nargs="+", default=None,
                        help=f"rows, by trainer name (default: {' '.join(METHODS)}; 'recent' = {' '.join(RECENT_METHODS)})")
    args = parser.parse_intermixed_args(argv)

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
    common += args.opts
    rows = []
    shots = sorted(set(args.shots))
    resolved = methods(args.methods)
    for method in resolved:
        print(f"{method.label} ...", flush=True)
        if method.few_shot:
            accs = {k: [run(method, k, seed, backbone, tag, common, args.output) for seed in args.seeds] for k in shots}
        else:
            zero = [run(method, shots[0], args.seeds[0], backbone, tag, common, args.output)]
            accs = {k: zero for k in shots}
        rows.append((method, accs))

    seeds = " ".join(map(str, args.seeds))
    n_seeds = f"{len(args.seeds)} seed{'s' if len(args.seeds) > 1 else ''} ({seeds})"
    title = f"Fashion-MNIST few-shot, {label}, {n_seeds}"
    figure_title = f"Fashion-MNIST few-shot\n{label}, {n_seeds}"
    lines = [f"{title}, {args.test_per_class * 10} test images: accuracy (%), mean ± std over seeds", "",
             "| method | " + " | ".join(f"{k}-shot" for k in shots) + " |",
             "| --- | " + " | ".join("---" for _ in shots) + " |"]
    for method, accs in rows:
        lines.append(f"| {method.label} | " + " | ".join(cell(accs[k]) for k in shots) + " |")
    # What the demo runs shorter than the papers, so nobody reads these as the papers' protocol.
    shortened = (f"{args.test_per_class} of 1000 test images per class (--test-per-class); "
                 + (f"seed{'s' if len(args.seeds) > 1 else ''} {seeds} of the papers' 1 2 3 (--seeds)"
                    if sorted(args.seeds) != [1, 2, 3] else "seeds 1 2 3, as the papers")
                 + "".join(f"; {m.shortened}" for m in resolved if m.shortened))
    lines += ["", f"Shortened for a 2-core machine: {shortened}."]
    os.makedirs(args.output, exist_ok=True)
    figure = os.path.join(args.output, "results.png")
    write_figure(rows, figure, figure_title,
                 f"Backbone: {label}; {n_seeds}, error bars: ±1 std over seeds; {args.test_per_class * 10} test images. "
                 f"Shortened: {shortened}.")
    lines += [f"Backbone: {backbone}", f"Figure: {figure}",
              f"Total time: {time.time() - start:.0f} s. Logs: {args.output}/*/*/seed*/log.txt"]
    table = "\n".join(lines)
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
