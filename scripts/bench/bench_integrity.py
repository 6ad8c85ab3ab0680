"""What the checksums cost: write and read a feature-cache-sized torch file with and without them.

    python scripts/bench/bench_integrity.py --mb 16 64 --repeat 3

For each size: plain ``torch.save`` + ``torch.load`` (what the code did before), then ours
(``atomic_torch_save`` with its sha256 record, ``load_torch_verified``: zip CRCs + sha256), best of
``--repeat`` runs, in seconds and MB/s. On a shared machine the figures are upper bounds.
"""
import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from engine.utils.integrity import load_torch_verified  # noqa: E402
from engine.utils.io import atomic_torch_save  # noqa: E402


def best(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, nargs="+", default=[16, 64], help="file sizes in MB (fp16 features)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bundle.pt")
        print("MB  | plain save | sealed save | plain load | verified load")
        for mb in args.mb:
            rows = mb * (1 << 20) // (1024 * 2)
            bundle = {"version": 1, "keys": [f"img/{i}.jpg|1|2" for i in range(rows)],
                      "features": torch.randn(rows, 1024).half()}
            plain_save = best(lambda: torch.save(bundle, path), args.repeat)
            plain_load = best(lambda: torch.load(path, weights_only=True), args.repeat)
            sealed_save = best(lambda: atomic_torch_save(bundle, path), args.repeat)
            verified_load = best(lambda: load_torch_verified(path, weights_only=True), args.repeat)
            print(f"{mb:<4}| {plain_save:8.3f} s | {sealed_save:9.3f} s | {plain_load:8.3f} s | {verified_load:9.3f} s"
                  f"   (verified load {mb / verified_load:.0f} MB/s)")


if __name__ == "__main__":
    main()
