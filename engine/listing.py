"""``python train.py --list trainers|datasets|backbones|configs``: what this checkout (and the
trainer folders of --trainer-dir / $TASKRES_TRAINER_DIRS) can run, as plain text on stdout.

    trainers   each registered trainer: its module file, config folder and yaml files, and its
               declared protocol (label, config rule, variants, evaluations) or "Protocol()"
    datasets   each registered dataset: the folder it expects under --root, present or not
    backbones  OpenAI CLIP names (weights file cached offline or not) and open_clip's tags
    configs    configs/datasets/*.yaml and the trainer configs per folder
"""
import glob
import os
import sys

from .protocol import declared_protocol

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rule_text(rule):
    if rule is None:
        return "the only yaml of its config folder"
    if callable(rule):
        return f"rule {getattr(rule, '__name__', repr(rule))}(dataset, shots, family)"
    return rule


def config_folder(cls):
    """Config folder of a trainer: configs/<Trainer>/ beside a file outside the checkout, else
    configs/trainers/<config_dir or Trainer>/ (the planner's rule, scripts/plan.py)."""
    module = sys.modules.get(cls.__module__)
    here = os.path.dirname(os.path.abspath(getattr(module, "__file__", "") or ROOT))
    beside = os.path.join(here, "configs", cls.__name__)
    if not here.startswith(os.path.join(ROOT, "")) and os.path.isdir(beside):
        return beside
    protocol = declared_protocol(cls)
    return os.path.join(ROOT, "configs", "trainers", (protocol and protocol.config_dir) or cls.__name__)


def trainer_lines():
    from . import TRAINER_REGISTRY

    lines = []
    for name, cls in TRAINER_REGISTRY:
        module = sys.modules.get(cls.__module__)
        folder = config_folder(cls)
        yamls = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(folder, "*.yaml")))
        lines.append(f"{name}  ({os.path.relpath(getattr(module, '__file__', '?'), ROOT)})")
        lines.append(f"  configs: {os.path.relpath(folder, ROOT)}/ ({len(yamls)}: {' '.join(yamls) or 'none'})")
        protocol = declared_protocol(cls)
        if protocol is None:
            lines.append("  protocol: Protocol() (not declared: its name as label, the only yaml at every shot count)")
            continue
        lines.append(f"  protocol: label {protocol.label or name!r}, config {_rule_text(protocol.config)}"
                     + ("" if protocol.trains else ", trains nothing (one run per dataset)")
                     + (f", evaluations {' '.join(protocol.evaluations)}" if protocol.evaluations else "")
                     + ("" if protocol.default_grid else ", not in compare.sh's default grid"))
        for variant in protocol.variants:
            cli = f"{name}-{variant.name}" if variant.name else name
            parts = [f"opts {' '.join(variant.opts)}" if variant.opts else "",
                     f"flags {' '.join(variant.flags)}" if variant.flags else "",
                     f"folder {variant.folder}" if variant.folder else "",
                     f"needs {' '.join(variant.needs)}" if variant.needs else ""]
            lines.append(f"  variant {cli}: " + ("; ".join(p for p in parts if p) or "the method itself"))
        if protocol.source:
            lines.append(f"  source: {protocol.source}")
    return lines


def dataset_lines(root):
    from .data.datasets import DATASET_REGISTRY

    lines = [f"dataset root: {root or '(none: pass --root DIR)'}"]
    for name, cls in DATASET_REGISTRY:
        sub = getattr(cls, "dataset_dir", "") or ""
        where = os.path.join(root, sub) if root else sub or "."
        state = ("present" if os.path.isdir(where) else "missing") if root else "?"
        lines.append(f"{name:24s} {sub or '(the root itself)':32s} {state}")
    return lines


def backbone_lines(cache_dir=None):
    from clip import weights

    lines = [f"OpenAI CLIP (weights cache: {weights.resolve_cache_dir(cache_dir)})"]
    for name in weights.available_models():
        path = weights.cached_file_path(name, cache_dir)
        lines.append(f"  {name:16s} {'cached' if os.path.isfile(path) else 'not cached (downloaded on first use)'}")
    try:
        import open_clip

        tags = [f"{m}@{t}" if t else m for m, t in open_clip.list_pretrained()]
        lines.append(f"open_clip tags ({len(tags)}; e.g. --backbone {tags[0] if tags else 'ViT-B-32@openai'}):")
        lines += [f"  {t}" for t in tags]
    except ImportError:
        lines.append("open_clip is not installed: its tags are not available")
    lines.append("or a weights file: --backbone path/to/weights.pt")
    return lines


def config_lines():
    lines = ["configs/datasets/: " + " ".join(sorted(os.path.basename(p)[:-5] for p in glob.glob(
        os.path.join(ROOT, "configs", "datasets", "*.yaml"))))]
    for folder in sorted(glob.glob(os.path.join(ROOT, "configs", "trainers", "*"))):
        names = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(folder, "*.yaml")))
        lines.append(f"configs/trainers/{os.path.basename(folder)}/: {' '.join(names)}")
    return lines


def print_list(what, args):
    lines = {"trainers": trainer_lines,
             "datasets": lambda: dataset_lines(os.path.abspath(args.root) if args.root else ""),
             "backbones": backbone_lines,
             "configs": config_lines}[what]()
    sys.stdout.write("\n".join(lines) + "\n")
