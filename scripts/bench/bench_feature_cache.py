"""Benchmark of the feature cache: one full TaskRes run end to end vs on cached features.

Builds a synthetic ImageNet-layout few-shot task (``<out>/data/imagenet/images/{train,val}/<wnid>/``
+ ``classnames.txt``: CLASSES x SHOTS training JPEGs and CLASSES x TEST_PER_CLASS test JPEGs of
SIZE px), then times ``train.main`` (the real ImageNet dataset, DataManager and TaskRes trainer)
with an untrained RN50 (``MODEL.BACKBONE.PRETRAINED False``: speed does not depend on the weight
values) in three modes, each in a fresh process:

    end-to-end     FEATURE_CACHE.ENABLED False: every augmented image through the encoder every epoch
    cached (cold)  an empty cache: V views per training image + the test set are encoded once
    cached (warm)  the same cache again: nothing may be encoded

and prints wall time per mode, the ratio, encoder images/s, the pure encoder forward throughput
of the same model (the limit), peak GPU memory and the cache size; ``<out>/bench_results.json``
keeps the figures. GPU (the issue's scale):

    python scripts/bench/bench_feature_cache.py --device cuda --workers 16

CPU variant (a few minutes on 2 cores):

    python scripts/bench/bench_feature_cache.py --device cpu --classes 20 --shots 4 \\
        --test-per-class 5 --epochs 10 --size 224 --workers 2

``--e2e-epochs K`` runs the end-to-end mode for K epochs only and extrapolates the full run
from its measured per-epoch time (printed as such), for machines where 200 end-to-end epochs
do not fit a time limit.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from multiprocessing import Pool

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAINER_CONFIG = os.path.join(ROOT, "configs", "trainers", "TaskRes", "adam_lr2e-4_B256_ep200.yaml")
MODES = ("e2e", "cold", "warm")
LABELS = {"e2e": "end-to-end", "cold": "cached (cold)", "warm": "cached (warm)"}
# the targets on one H100
TARGET_RATIO, TARGET_FRACTION, TARGET_WARM_S = 30.0, 0.5, 10.0


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--test-per-class", type=int, default=10, help="test images per class (1000 x 10 = 10k)")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--size", type=int, default=224, help="side of the generated JPEGs (the model input stays the config's 224)")
    p.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when available")
    p.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1),
                   help="DATALOADER.NUM_WORKERS (decoding) and data-generation processes")
    p.add_argument("--out", default=os.path.join(ROOT, "output", "bench_feature_cache"),
                   help="folder for the data, the cache, the runs and bench_results.json")
    p.add_argument("--views", type=int, default=None, help="FEATURE_CACHE.TRAIN_VIEWS (default: the config default)")
    p.add_argument("--backbone", default="RN50")
    p.add_argument("--prec", default="fp16", choices=("fp16", "fp32", "amp"), help="TRAINER.TaskRes.PREC")
    p.add_argument("--encode-batch-size", type=int, default=256, help="FEATURE_CACHE.ENCODE_BATCH_SIZE")
    p.add_argument("--threads", type=int, default=1,
                   help="FEATURE_CACHE.NUM_THREADS (torch CPU threads of the runs; 0 = one per core)")
    p.add_argument("--e2e-epochs", type=int, default=None,
                   help="run end-to-end for this many epochs and extrapolate to --epochs (default: all)")
    p.add_argument("--decode", choices=("cpu", "device", "auto"), default="cpu",
                   help="FEATURE_CACHE.DECODE: JPEG decode + crops in CPU workers or on the device")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of e2e,cold,warm")
    p.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)  # internal: run one mode
    return p


# ---- the synthetic task -----------------------------------------------------------------------
def _write_class(job):
    """Write one class's train and test JPEGs: a class-specific colour layout plus per-image noise."""
    import numpy as np
    from PIL import Image

    image_dir, wnid, label, n_train, n_test, size = job
    rng = np.random.default_rng(label)
    layout = Image.fromarray(rng.integers(0, 256, (7, 7, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    base = np.asarray(layout, dtype=np.float32)
    for split, count in (("train", n_train), ("val", n_test)):
        folder = os.path.join(image_dir, split, wnid)
        os.makedirs(folder, exist_ok=True)
        for i in range(count):
            noisy = base + rng.normal(0, 20, base.shape).astype(np.float32)
            shifted = np.roll(noisy, tuple(rng.integers(-size // 8, size // 8 + 1, 2)), axis=(0, 1))
            Image.fromarray(np.clip(shifted, 0, 255).astype(np.uint8)).save(
                os.path.join(folder, f"{wnid}_{i}.JPEG"), quality=90)


def make_task(out, classes, shots, test_per_class, size, workers):
    """The ImageNet-layout task under ``out``/data (reused when a previous bench made the same one)."""
    data = os.path.join(out, "data")
    dataset_dir = os.path.join(data, "imagenet")
    spec = {"classes": classes, "shots": shots, "test_per_class": test_per_class, "size": size, "version": 1}
    marker = os.path.join(dataset_dir, "bench_task.json")
    if os.path.exists(marker):
        with open(marker) as f:
            if json.load(f) == spec:
                return data, 0.0
    shutil.rmtree(dataset_dir, ignore_errors=True)
    start = time.perf_counter()
    image_dir = os.path.join(dataset_dir, "images")
    wnids = [f"n{90000000 + c:08d}" for c in range(classes)]
    jobs = [(image_dir, w, c, shots, test_per_class, size) for c, w in enumerate(wnids)]
    with Pool(max(1, workers)) as pool:
        pool.map(_write_class, jobs, chunksize=max(1, len(jobs) // (4 * max(1, workers))))
    with open(os.path.join(dataset_dir, "classnames.txt"), "w") as f:
        f.writelines(f"{w} synthetic class {c}\n" for c, w in enumerate(wnids))
    with open(marker, "w") as f:
        json.dump(spec, f)
    return data, time.perf_counter() - start


# ---- one mode, in a fresh process ---------------------------------------------------------------
def train_argv(args, data, mode, epochs):
    out = os.path.join(args.out, "runs", mode)
    opts = [
        "DATASET.NAME", "ImageNet", "DATASET.NUM_SHOTS", args.shots, "OPTIM.MAX_EPOCH", epochs,
        "MODEL.BACKBONE.NAME", args.backbone, "MODEL.BACKBONE.PRETRAINED", False,
        "TRAINER.TaskRes.PREC", args.prec, "TRAINER.TaskRes.RESIDUAL_SCALE", 0.5,
        "DATALOADER.NUM_WORKERS", args.workers,
        "USE_CUDA", args.device == "cuda",
        "FEATURE_CACHE.ENABLED", mode != "e2e", "FEATURE_CACHE.DIR", os.path.join(args.out, "cache"),
        "FEATURE_CACHE.ENCODE_BATCH_SIZE", args.encode_batch_size, "FEATURE_CACHE.NUM_THREADS", args.threads,
        "FEATURE_CACHE.DECODE", args.decode,
    ]
    if args.views is not None:
        opts += ["FEATURE_CACHE.TRAIN_VIEWS", args.views]
    return ["--root", data, "--seed", 1, "--trainer", "TaskRes", "--config-file", TRAINER_CONFIG,
            "--output-dir", out, *opts], out


def forward_throughput(trainer, batch_size, min_seconds):
    """Images/s of the bare encoder forward on device-resident input: the ceiling for encoding."""
    import torch

    device = trainer.device
    size = trainer.cfg.INPUT.SIZE
    images = torch.randn(batch_size, 3, *size, device=device)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        for _ in range(3 if device.type == "cuda" else 1):  # warm-up (cudnn autotuning)
            trainer.encode_images(images)
        sync()
        start, count = time.perf_counter(), 0
        while count < 2 or time.perf_counter() - start < min_seconds:
            trainer.encode_images(images)
            count += 1
            if device.type == "cuda" and count % 5:
                continue
            sync()
        sync()
    return count * batch_size / (time.perf_counter() - start)


def run_child(args):
    """Run one mode with train.main in this process; write its figures as json."""
    sys.path.insert(0, ROOT)
    import torch

    import train
    from engine.trainer import TrainerX

    mode = args.child
    epochs = args.e2e_epochs if mode == "e2e" and args.e2e_epochs else args.epochs
    data = os.path.join(args.out, "data")
    argv, out = train_argv(args, data, mode, epochs)
    shutil.rmtree(out, ignore_errors=True)  # a leftover run would be resumed, not timed
    if mode == "cold":
        shutil.rmtree(os.path.join(args.out, "cache"), ignore_errors=True)
    cuda = args.device == "cuda"

    epoch_times = []
    run_epoch = TrainerX.run_epoch

    def timed_run_epoch(self):  # per-epoch time, for --e2e-epochs extrapolation
        start = time.perf_counter()
        run_epoch(self)
        if cuda:
            torch.cuda.synchronize()
        epoch_times.append(time.perf_counter() - start)

    TrainerX.run_epoch = timed_run_epoch
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    start = time.perf_counter()
    trainer = train.main([str(a) for a in argv])
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    store = getattr(trainer, "feature_store", None)
    loader = trainer.train_loader_x
    per_epoch = len(loader) * loader.batch_size if loader.drop_last else len(loader.dataset)
    result = {
        "mode": mode, "epochs": epochs, "wall_s": wall, "epoch_s": epoch_times,
        "train_images": len(trainer.dm.dataset.train_x), "test_images": len(trainer.dm.dataset.test),
        "peak_gpu_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "device_name": torch.cuda.get_device_name() if cuda else "cpu",
    }
    if store is None:  # every training image of every epoch and the test set went through the encoder
        result["encoded"] = epochs * per_epoch + result["test_images"]
        result["encode_s"] = wall
    else:
        result["encoded"] = store.encoded
        result["encode_s"] = store.encode_seconds
        result["cache_bytes"] = store.size_bytes()
        result["views"] = min(trainer.cfg.FEATURE_CACHE.TRAIN_VIEWS, trainer.max_epoch)
    if mode == "cold":
        batch = args.encode_batch_size if cuda else min(args.encode_batch_size, 32)
        result["forward_batch"] = batch
        result["forward_img_s"] = forward_throughput(trainer, batch, 5.0 if cuda else 3.0)
    with open(os.path.join(args.out, f"result_{mode}.json"), "w") as f:
        json.dump(result, f)


# ---- the report ---------------------------------------------------------------------------------
def full_e2e_seconds(r, epochs):
    """The end-to-end wall time of ``epochs`` epochs: measured, or extrapolated from fewer."""
    if r["epochs"] >= epochs or not r["epoch_s"]:
        return r["wall_s"], False
    per_epoch = sum(r["epoch_s"]) / len(r["epoch_s"])
    return r["wall_s"] + (epochs - r["epochs"]) * per_epoch, True


def report(args, results, gen_s, process_s):
    mib = 2 ** 20
    any_r = next(iter(results.values()))
    print(f"\nTaskRes feature-cache benchmark: synthetic ImageNet layout, {args.classes} classes x {args.shots} shots "
          f"({any_r['train_images']} train), {any_r['test_images']} test, {args.size} px JPEGs, {args.backbone} "
          f"(random weights), PREC {args.prec}, {args.epochs} epochs, device {any_r['device_name']}, "
          f"{args.workers} workers, {args.threads or 'default'} torch thread(s), "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if gen_s:
        print(f"data generation: {gen_s:.1f} s")
    print(f"{'mode':<16}{'wall s':>10}{'process s':>11}{'encoded':>11}{'encode s':>10}{'encoder img/s':>15}{'peak GPU MiB':>14}")
    for mode in MODES:
        r = results.get(mode)
        if not r:
            continue
        wall, extrapolated = full_e2e_seconds(r, args.epochs) if mode == "e2e" else (r["wall_s"], False)
        rate = r["encoded"] / r["encode_s"] if r["encoded"] and r["encode_s"] else 0.0
        peak = f"{r['peak_gpu_bytes'] / mib:.0f}" if r["peak_gpu_bytes"] is not None else "-"
        wall_txt = f"{wall:.1f}" + ("*" if extrapolated else "")
        print(f"{LABELS[mode]:<16}{wall_txt:>10}{process_s[mode]:>11.1f}{r['encoded']:>11}{r['encode_s']:>10.1f}"
              f"{rate:>15.0f}{peak:>14}")
        if extrapolated:
            print(f"  * end-to-end ran {r['epochs']} of {args.epochs} epochs ({r['wall_s']:.1f} s); "
                  f"the rest is extrapolated at {sum(r['epoch_s']) / len(r['epoch_s']):.2f} s/epoch")
    summary = {}
    if "e2e" in results and "cold" in results:
        e2e_wall, _ = full_e2e_seconds(results["e2e"], args.epochs)
        ratio = e2e_wall / results["cold"]["wall_s"]
        summary["ratio"] = ratio
        v, n, t = results["cold"]["views"], results["cold"]["train_images"], results["cold"]["test_images"]
        arithmetic = (args.epochs * n + t) / (v * n + t)
        print(f"speed-up end-to-end / cached (cold): {ratio:.1f}x  (encode-count bound (E*N+T)/(V*N+T) = "
              f"({args.epochs}*{n}+{t})/({v}*{n}+{t}) = {arithmetic:.1f}x)")
    if "cold" in results:
        cold = results["cold"]
        rate = cold["encoded"] / cold["encode_s"] if cold["encode_s"] else 0.0
        fraction = rate / cold["forward_img_s"]
        summary["fraction"] = fraction
        print(f"pure encoder forward (batch {cold['forward_batch']}, same model, device-resident input): "
              f"{cold['forward_img_s']:.0f} img/s; cached encoding reached {rate:.0f} img/s = {100 * fraction:.0f}% of it")
        print(f"cache size: {cold['cache_bytes'] / mib:.1f} MiB ({cold['views']} views x {cold['train_images']} train "
              f"+ {cold['test_images']} test features) in {os.path.join(args.out, 'cache')}")
    if "warm" in results:
        warm = results["warm"]
        summary["warm_s"] = warm["wall_s"]
        print(f"warm re-run: encoded {warm['encoded']} images, {warm['wall_s']:.1f} s in train.main "
              f"({process_s['warm']:.1f} s with interpreter start and imports)")
    if any_r["device_name"] != "cpu":
        checks = [("ratio", ">=", TARGET_RATIO, "end-to-end / cached"),
                  ("fraction", ">=", TARGET_FRACTION, "cached encoding / pure forward"),
                  ("warm_s", "<", TARGET_WARM_S, "warm re-run seconds")]
        for key, op, target, what in checks:
            if key in summary:
                ok = summary[key] >= target if op == ">=" else summary[key] < target
                print(f"target {what} {op} {target:g}: {summary[key]:.2f} {'met' if ok else 'MISSED'}")
    return summary


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.out = os.path.abspath(args.out)
    if args.child:
        run_child(args)
        return
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise SystemExit(f"--modes: unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}.")
    if "warm" in modes and "cold" not in modes and not os.path.isdir(os.path.join(args.out, "cache")):
        raise SystemExit(f"--modes warm needs a cache in {args.out}/cache: run the cold mode first.")
    os.makedirs(os.path.join(args.out, "logs"), exist_ok=True)
    print(f"generating the synthetic task in {args.out}/data ...", flush=True)
    _, gen_s = make_task(args.out, args.classes, args.shots, args.test_per_class, args.size, args.workers)
    passthrough = [a for a in (argv if argv is not None else sys.argv[1:])]
    results, process_s = {}, {}
    for mode in (m for m in MODES if m in modes):
        log = os.path.join(args.out, "logs", f"{mode}.txt")
        print(f"running {LABELS[mode]} (log: {log}) ...", flush=True)
        start = time.perf_counter()
        with open(log, "w") as f:
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), *passthrough, "--device", args.device,
                                   "--out", args.out, "--child", mode], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
        process_s[mode] = time.perf_counter() - start
        if proc.returncode:
            raise SystemExit(f"the {LABELS[mode]} run failed (exit {proc.returncode}); see {log}")
        with open(os.path.join(args.out, f"result_{mode}.json")) as f:
            results[mode] = json.load(f)
    if "warm" in results and results["warm"]["encoded"]:
        raise SystemExit(f"the warm re-run encoded {results['warm']['encoded']} images; it must encode none")
    summary = report(args, results, gen_s, process_s)
    with open(os.path.join(args.out, "bench_results.json"), "w") as f:
        json.dump({"args": {k: v for k, v in vars(args).items() if k != "child"}, "results": results,
                   "process_s": process_s, "summary": summary}, f, indent=1)


if __name__ == "__main__":
    main()
