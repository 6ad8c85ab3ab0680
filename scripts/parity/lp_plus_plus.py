"""Parity of our LP++ against the original's ``LinearProbe_P2`` on the same features (not a test:
it needs the original repository; seconds on a CPU).

    python scripts/parity/lp_plus_plus.py --python /tmp/orig/venv/bin/python \\
        --repo /tmp/orig/FewShot-CLIP-Strong-Baseline --work /tmp/parity-lpp [--shots 4 --epochs 300]

The original is not a trainer but a function of features (``methods/linear_probe_p2.py``): it
encodes the few-shot train and val images, builds its classifier and runs its loop. Here our
trainer (train.py, LPPlusPlus) runs on a tiny CLIP (fp16-exact, tests/clip_fixtures.py) and
Fashion-MNIST images in EuroSAT's layout (scripts/parity/text_methods.py); its train / val / test
features and text classifier are then handed to the original's ``LinearProbe_P2.forward`` (its
loaders yield those features, its "CLIP" returns them), in the original's own code, run from a copy
of the repository by ``--python``. The only changes there: ``.cuda()`` returns the tensor or module
itself (CPU), and two wrappers record what it builds (the optimiser's parameters, alpha) without
changing them. Both sides start from the original's initial bias (nn.Linear's draw from its global
stream). The original computes in fp16 (it hard-codes an fp16 one-hot: CLIP's GPU features), so
both get the same fp16-rounded features and ours computes in fp32: the figures include fp16
rounding. Compared: the learnt W, b, alpha after the last epoch, the step sizes, alpha's start,
and the test accuracy at the best-val epoch; plus our trainer's run end to end (train.py, its accuracy
and checkpoint evaluated again with ``--eval-only``).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests"), os.path.dirname(os.path.abspath(__file__))]

ORIGINAL = r"""
import json, sys, torch, torch.nn as nn
torch.Tensor.cuda = lambda self, *a, **k: self          # CPU: .cuda() is the identity
nn.Module.cuda = lambda self, *a, **k: self
sys.path.insert(0, ".")
import methods.linear_probe_p2 as lpp
data = {k: (v.half() if v.is_floating_point() else v) for k, v in torch.load(sys.argv[1]).items()}
seen = {}
class RecordingSGD(torch.optim.SGD):                      # records, changes nothing
    def __init__(self, params, *a, **k):
        params = list(params)
        seen["params"], seen["init"] = params, [p.detach().clone() for p in params]
        seen["lr_w"] = a[0]
        super().__init__(params, *a, **k)
lpp.torch.optim.SGD = RecordingSGD
variable = lpp.Variable
def recording_variable(t, **k):
    seen["alpha"] = variable(t, **k)
    seen["alpha_init"] = t.detach().clone()
    return seen["alpha"]
lpp.Variable = recording_variable
class FeatureCLIP:                                        # its "encode_image" returns the given features
    dtype = torch.float16                                 # as CLIP on the GPU: its get_one_hot is fp16
    def encode_image(self, x):
        return x.clone()
batches = lambda f, y: [(f, y)]
method = lpp.LinearProbe_P2({"train_epoch": int(sys.argv[3]), "shots": int(sys.argv[4]), "dataset": "eurosat",
                            "output_dir": "."})
torch.manual_seed(int(sys.argv[5]))
loss, acc = method(train_loader=batches(data["train_f"], data["train_y"]), val_loader=batches(data["val_f"], data["val_y"]),
                   test_features=data["test_f"], test_labels=data["test_y"], text_weights=data["text"],
                   model=FeatureCLIP(), classnames=None)
weight, bias = seen["params"]
torch.save({"weight": weight.detach().float(), "bias": bias.detach().float(), "alpha": seen["alpha"].detach()[0].float(),
            "init_bias": seen["init"][1].float(), "alpha_init": seen["alpha_init"][0, 0].item(), "lr_w": float(seen["lr_w"]),
            "lr_alpha": float(method.lr_alpha), "acc_test": float(acc)}, sys.argv[2])
"""


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--python", required=True, help="interpreter with torch, scipy, matplotlib, tqdm")
    p.add_argument("--repo", required=True, help="unpacked FereshteShakeri/FewShot-CLIP-Strong-Baseline")
    p.add_argument("--work", required=True, help="scratch folder (outside the project)")
    p.add_argument("--shots", type=int, default=4)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--seed", type=int, default=1)
    return p


def main(argv=None):
    import text_methods as tm
    from helpers import accuracies, run_train
    from trainers import lp_plus_plus as lpp

    args = build_parser().parse_args(argv)
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    weights = tm.fp16_exact_clip(os.path.join(args.work, "tiny_vit_fp16_exact.pt"))
    data = tm.write_eurosat(os.path.join(args.work, "data"))
    cfg = os.path.join(ROOT, "configs", "trainers", "LPPlusPlus", "rn50.yaml")
    common = ["--root", data, "--seed", args.seed, "--trainer", "LPPlusPlus", "--config-file", cfg,
              "--dataset-config-file", os.path.join(ROOT, "configs", "datasets", "eurosat.yaml"),
              "--backbone", weights, "DATASET.NUM_SHOTS", args.shots, "OPTIM.MAX_EPOCH", args.epochs,
              "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", 0, "TRAINER.LP_PLUS_PLUS.PREC", "fp32"]
    out = os.path.join(args.work, "ours")
    trainer = run_train(*common, "--output-dir", out)
    run_train(*common, "--output-dir", out + "_eval", "--model-dir", out, "--load-epoch", 1, "--eval-only")
    acc_run, acc_eval = accuracies(os.path.join(out, "log.txt"))[-1], accuracies(os.path.join(out + "_eval", "log.txt"))[-1]

    # the very features and classifier our run used
    from trainers.split_features import split_features

    ds = trainer.dm.dataset
    norm = lambda f: (f / f.norm(dim=-1, keepdim=True)).float()  # noqa: E731
    feats = {"train_f": split_features(trainer, ds.train_x, "train", True, views=[0])[0],
             "val_f": split_features(trainer, ds.val, "val", False), "test_f": split_features(trainer, ds.test, "test", False)}
    # the original's regime is CLIP's fp16 features (its one-hot is fp16): both sides get the same
    # fp16-rounded features; ours computes in fp32 on them, the original in fp16
    inputs = {k: v.half().float() for k, v in feats.items()}  # it normalises train/val itself, test comes normalised
    inputs["test_f"] = norm(inputs["test_f"]).half().float()
    labels = {k: torch.tensor([d.label for d in items]) for k, items in
              (("train_y", ds.train_x), ("val_y", ds.val), ("test_y", ds.test))}
    text = trainer.model.text_weights.float()
    features_file = os.path.join(args.work, "features.pt")
    torch.save({**inputs, **labels, "text": text}, features_file)

    repo = os.path.join(args.work, "original")
    shutil.copytree(args.repo, repo)
    result_file = os.path.join(args.work, "original.pt")
    proc = subprocess.run([args.python, "-c", ORIGINAL, features_file, result_file, str(args.epochs), str(args.shots),
                           str(args.seed)], cwd=repo, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"parity: the original failed:\n{proc.stderr[-3000:]}")
    orig = torch.load(result_file)

    fit = lpp.fit_lp_plus_plus(norm(inputs["train_f"]), labels["train_y"], norm(inputs["val_f"]), labels["val_y"], text,
                               trainer.num_classes, args.epochs, orig["init_bias"])
    weight, bias, alpha = fit["best"]
    acc_best = (lpp.logits(inputs["test_f"], weight, bias, alpha, text).argmax(1) == labels["test_y"]).float().mean().item() * 100
    final = dict(zip(("weight", "bias", "alpha"), fit["final"]))
    rel = {k: ((final[k] - orig[k]).abs().max() / orig[k].abs().max()).item() for k in final}
    report = {"shots": args.shots, "epochs": args.epochs, "train_features": len(labels["train_y"]),
              "lr_w": [fit["lr_w"], orig["lr_w"]], "lr_alpha": [fit["lr_alpha"], orig["lr_alpha"]],
              "alpha_init": [fit["alpha_init"], orig["alpha_init"]], "acc_test_at_best_val": [acc_best, orig["acc_test"]],
              "final_max_rel_diff": rel, "ours_train_py": {"accuracy": acc_run, "eval_only_accuracy": acc_eval}}
    with open(os.path.join(args.work, "parity.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
