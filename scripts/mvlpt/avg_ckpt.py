"""Average a source prompt over seeds (MVLPT's scripts/avg_ckpt.py) into one checkpoint.

    python scripts/mvlpt/avg_ckpt.py RUN [--seeds 1 2 3] [--model prompt_learner] [--file model-best.pth.tar]

RUN is a source run folder holding seed<S>/ (as main_mt_coopdata_cut.sh writes). Reads
RUN/seed<S>/<model>/<file> for each seed and writes RUN/<model>/model-best.pth.tar with every
state-dict tensor averaged over the seeds, and the averaged epoch (an int) and val_result, as
the original does; the optimizer and scheduler states are left out. A target run then starts
from it with ``--model-dir RUN`` (main_single_coopdata_cut.sh's default source).

Unlike the original (which hard-codes its paths and seeds), a missing file or seeds whose
prompts do not match (other keys or shapes) end in one sentence and nothing is written.
"""
import argparse
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from engine.errors import UserError  # noqa: E402
from engine.utils.checkpoint import BEST_NAME, load_checkpoint, save_checkpoint  # noqa: E402


def average_checkpoints(checkpoints, names):
    """One checkpoint dict: tensors averaged (in float64, back to each tensor's dtype), epoch and
    val_result averaged; ``names`` label the inputs in error messages."""
    keys = list(checkpoints[0]["state_dict"])
    for ckpt, name in zip(checkpoints[1:], names[1:]):
        if list(ckpt["state_dict"]) != keys:
            raise UserError(f"{name} holds other weights ({', '.join(sorted(ckpt['state_dict']))}) than {names[0]} "
                            f"({', '.join(sorted(keys))}); average runs of one setting only.")
    state = {}
    for key in keys:
        values = [ckpt["state_dict"][key] for ckpt in checkpoints]
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) > 1:
            raise UserError(f"'{key}' has the shapes {sorted(shapes)} across {', '.join(names)}; "
                            "average runs of one setting only.")
        state[key] = torch.stack([v.double() for v in values]).mean(dim=0).to(values[0].dtype)
    epochs = [int(ckpt.get("epoch", 0)) for ckpt in checkpoints]
    vals = [ckpt.get("val_result") for ckpt in checkpoints]
    val = sum(vals) / len(vals) if all(isinstance(v, (int, float)) for v in vals) else None
    return {"state_dict": state, "epoch": int(sum(epochs) / len(epochs)), "val_result": val,
            "optimizer": None, "scheduler": None}


def average_seeds(run, seeds, model="prompt_learner", file=BEST_NAME):
    """Average RUN/seed<S>/<model>/<file> over ``seeds``; returns the path written."""
    paths = [os.path.join(run, f"seed{seed}", model, file) for seed in seeds]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise UserError(f"{missing[0]} does not exist; finish that seed's source run first or leave it out of --seeds.")
    checkpoints = [load_checkpoint(p) for p in paths]
    averaged = average_checkpoints(checkpoints, paths)
    path = save_checkpoint(averaged, os.path.join(run, model), model_name=BEST_NAME, update_pointer=False)
    return path, averaged


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="source run folder holding seed<S>/")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--model", default="prompt_learner", help="registered model folder")
    parser.add_argument("--file", default=BEST_NAME,
                        help="checkpoint file of each seed (model.pth.tar-<E> for the last)")
    args = parser.parse_args(argv)
    try:
        path, averaged = average_seeds(args.run, args.seeds, args.model, args.file)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    val = averaged["val_result"]
    print(f"averaged seeds {' '.join(map(str, args.seeds))} (epoch {averaged['epoch']}"
          + (f", val_result {val:.2f}" if val is not None else "") + f") -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
