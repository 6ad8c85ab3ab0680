"""Each comparison method's published per-shot (and per-dataset) settings, for the comparison
runner: which trainer config a (method, dataset, shots) run uses.

    from trainers.method_rules import config_file
    config_file("CLIP_Adapter", "oxford_pets", 1)   # configs/trainers/CLIP_Adapter/rn50_ep50.yaml

Datasets are named by their config stem (``configs/datasets/<stem>.yaml``). Sources:
- CoOp (COOP.md; CLIP-Adapter's repository says to run it with CoOp's commands): 1 shot 50
  epochs, 2 and 4 shots 100, 8 and 16 shots 200; ImageNet 50 epochs at every shot count.
- Tip-Adapter(-F) (its configs/<dataset>.yaml): one setting per dataset at every shot count;
  train_epoch 20, EuroSAT 100; search_scale, init_alpha and init_beta per dataset (below).
- Linear probe and the zero-shot baselines train nothing: one config each.
The yaml files under configs/trainers/ hold the same numbers (tests/test_methods_train.py
checks that they agree).
"""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHOTS = (1, 2, 4, 8, 16)

# CoOp's per-shot schedule, as its config names: rn50_ep50 (50), rn50_ep100 (100), rn50 (200)
COOP_EPOCHS = {1: 50, 2: 100, 4: 100, 8: 200, 16: 200}
COOP_IMAGENET_EPOCHS = 50
_COOP_SUFFIX = {50: "_ep50", 100: "_ep100", 200: ""}

# Tip-Adapter's configs/<name>.yaml: (search_scale [beta, alpha], init_alpha, init_beta, train_epoch)
TIP_ADAPTER = {
    "caltech101": ([12, 5], 3.0, 1.0, 20),
    "dtd": ([13, 13], 2.0, 1.0, 20),
    "eurosat": ([12, 10], 2.0, 1.0, 100),
    "fgvc_aircraft": ([30, 30], 5.0, 1.0, 20),
    "food101": ([10, 10], 1.17, 1.0, 20),
    "imagenet": ([7, 3], 1.17, 1.0, 20),
    "oxford_flowers": ([50, 50], 10.0, 1.0, 20),
    "oxford_pets": ([7, 3], 1.17, 1.0, 20),
    "stanford_cars": ([20, 10], 3.0, 1.0, 20),
    "sun397": ([12, 10], 1.17, 1.0, 20),
    "ucf101": ([7, 3], 3.0, 1.0, 20),
}
TIP_SEARCH_STEP = [200, 20]
TIP_AUGMENT_EPOCH = 10
TIP_LR = 0.001


def coop_epochs(dataset, shots):
    """CoOp's (and CLIP-Adapter's) epochs for a run."""
    if dataset == "imagenet":
        return COOP_IMAGENET_EPOCHS
    if shots not in COOP_EPOCHS:
        raise ValueError(f"CoOp publishes epochs for {', '.join(map(str, COOP_EPOCHS))} shots, not {shots}")
    return COOP_EPOCHS[shots]


def config_file(method, dataset, shots, backbone="rn50"):
    """The trainer config (path relative to the repository) of one run of ``method``."""
    base = f"configs/trainers/{method}"
    if method in ("ZeroshotCLIP", "ZeroshotCLIP2"):  # CoOp runs both with its CoOp/<backbone>.yaml
        return f"configs/trainers/ZeroshotCLIP2/{backbone}.yaml"
    if method == "LinearProbe":
        return f"{base}/{backbone}.yaml"
    if method == "CLIP_Adapter":
        return f"{base}/{backbone}{_COOP_SUFFIX[coop_epochs(dataset, shots)]}.yaml"
    if method in ("TipAdapter", "TipAdapterF"):
        if dataset not in TIP_ADAPTER:
            raise ValueError(f"Tip-Adapter publishes settings for {', '.join(TIP_ADAPTER)}, not {dataset!r}")
        return f"{base}/{backbone}_{dataset}.yaml"
    raise ValueError(f"no published rules for method {method!r}")
