"""The shared inputs of a parity run against an original repository (ours and theirs read the same files).

    python scripts/parity/make_inputs.py OUT [--layers 3] [--per-class-train 4] [--per-class-test 10]

writes
    OUT/tiny_b16.pt           an OpenAI-format CLIP state dict with ViT-B/16's widths (text 512, vision 768,
                              embed 512: MaPLe's and PromptSRC's originals hard-code them) but ``--layers``
                              blocks per tower and 32 px input (patch 16: 4 patches), seeded random weights
                              rounded to fp16 values
    OUT/data_ours/eurosat/, OUT/data_orig/eurosat/
                              Fashion-MNIST t10k images laid out as CoOp's EuroSAT (``2750/<class>/<n>.jpg``
                              and ``split_zhou_EuroSAT.json``), one identical copy per side (each side writes
                              its own ``split_fewshot/`` files)
The images come from Debian's dataset-fashion-mnist package (/usr/share/datasets/fashion-mnist).
"""
import argparse
import gzip
import json
import os
import shutil
import sys

import numpy as np
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from clip.model import CLIP  # noqa: E402

FASHION = "/usr/share/datasets/fashion-mnist"
CLASSES = ["T-shirt or top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def tiny_b16(path, layers, seed=0):
    """ViT-B/16 widths, ``layers`` blocks per tower, 32 px: OpenAI's key names (our clip.model.CLIP)."""
    torch.manual_seed(seed)
    model = CLIP(512, 32, layers, 768, 16, 77, 49408, 512, 8, layers)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    # constant tensors (LayerNorms at 1/0, biases at 0) get seeded values so a weight that failed
    # to load shows in the outputs
    generator = torch.Generator().manual_seed(seed + 1)
    for key, value in state.items():
        if value.is_floating_point() and value.numel() > 1 and value.min() == value.max():
            state[key] = value + 0.05 * torch.randn(value.shape, generator=generator)
    # values an fp16 file holds, as OpenAI's release: the originals' build_model rounds the matrices to
    # fp16 before any .float(), so fp32 weights would differ between the sides by that rounding
    torch.save({k: v.half().float() if v.is_floating_point() else v for k, v in state.items()}, path)


def eurosat_layout(root, per_class_train, per_class_test):
    images = read_idx(os.path.join(FASHION, "t10k-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(FASHION, "t10k-labels-idx1-ubyte.gz"))
    split = {"train": [], "val": [], "test": []}
    counts = {"train": per_class_train, "val": per_class_train, "test": per_class_test}
    for label, name in enumerate(CLASSES):
        folder = name.replace(" ", "_")
        os.makedirs(os.path.join(root, "2750", folder), exist_ok=True)
        index = np.flatnonzero(labels == label)
        start = 0
        for part in ("train", "val", "test"):
            for n in index[start:start + counts[part]]:
                rel = f"{folder}/{folder}_{n}.jpg"
                Image.fromarray(images[n]).convert("RGB").save(os.path.join(root, "2750", rel), quality=95)
                split[part].append([rel, label, name])
            start += counts[part]
    with open(os.path.join(root, "split_zhou_EuroSAT.json"), "w") as f:
        json.dump(split, f)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--per-class-train", type=int, default=4)
    p.add_argument("--per-class-test", type=int, default=10)
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    tiny_b16(os.path.join(args.out, "tiny_b16.pt"), args.layers)
    first = os.path.join(args.out, "data_ours", "eurosat")
    eurosat_layout(first, args.per_class_train, args.per_class_test)
    shutil.copytree(first, os.path.join(args.out, "data_orig", "eurosat"), dirs_exist_ok=True)
    print(f"wrote {args.out}/tiny_b16.pt and data_ours/, data_orig/ (EuroSAT layout)")


if __name__ == "__main__":
    main()
