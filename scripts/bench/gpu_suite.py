"""Every GPU figure in one command (< 8 minutes on one H100/H200), for the short GPU windows.

    python scripts/bench/gpu_suite.py                     # on a CUDA machine: the full suite
    python scripts/bench/gpu_suite.py --tiny --device cpu # the same steps at a toy size (CI runs it)

It makes its own data (a synthetic ImageNet layout of real JPEG sizes) and weights (untrained
RN50 / ViT-B/16: speed does not depend on the weight values), needs nothing else, and writes
``<out>/gpu_suite.json`` and ``<out>/gpu_suite.md`` after EVERY step and prints each figure as
it goes, so a run cut off by the time limit still leaves what it measured. Steps:

1. forward limit: the image tower's pure forward, images/s, RN50 and ViT-B/16 x fp32/fp16/amp,
   channels_last on CUDA, device-resident input (the ceiling of any encoding);
2. decode: images/s of JPEG decode + a random resized crop, in CPU loader workers (Pillow) vs on
   the device (FEATURE_CACHE.DECODE device), and how far their pixels are apart;
3. cold extraction (empty cache) + a TaskRes 200-epoch run on cached features, its encoding rate
   as a fraction of the forward limit; the same with device decoding; a warm re-run (nothing
   encoded); the end-to-end loop's epoch (scripts/bench/bench_feature_cache.py, fresh processes);
4. projections from the measured rates: one 16-shot ImageNet RN50 run, ours vs the original end to
   end, and the whole protocol (11 datasets x 5 shots x 3 seeds x regular + enhanced, + DG);
5. the CUDA tests (``pytest -m cuda``).
"""
import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

# The benchmark's datasets at their real sizes (CoOp's splits): classes and test images; DG targets
# are evaluated from the ImageNet 16-shot runs. Source: CoOp's DATASETS.md / split files.
DATASETS = {
    "imagenet": (1000, 50000), "caltech101": (100, 2465), "oxford_pets": (37, 3669),
    "stanford_cars": (196, 8041), "oxford_flowers": (102, 2463), "food101": (101, 30300),
    "fgvc_aircraft": (100, 3333), "sun397": (397, 19850), "dtd": (47, 1692), "eurosat": (10, 8100),
    "ucf101": (101, 3783),
}
DG_TARGETS = {"imagenetv2": 10000, "imagenet_sketch": 50889, "imagenet_a": 7500, "imagenet_r": 30000}
SHOTS, SEEDS = (1, 2, 4, 8, 16), (1, 2, 3)
TASKRES_EPOCHS = {1: 100, 2: 100, 4: 100, 8: 200, 16: 200}  # train_regular.sh's rule
STRONG_BASE_EPOCHS = 50
VIEWS = 4  # FEATURE_CACHE.TRAIN_VIEWS default
ORIGINAL_H100_S = 2690  # the original TaskRes + Dassl, one 16-shot ImageNet 200-epoch run (H100, measured)


class Report:
    """The suite's figures, rewritten to json + markdown after every step."""

    def __init__(self, out, meta):
        self.out, self.data, self.lines = out, {"meta": meta, "steps": {}}, []
        os.makedirs(out, exist_ok=True)

    def step(self, name, figures, lines):
        self.data["steps"][name] = figures
        self.lines += [f"## {name}", ""] + lines + [""]
        for line in lines:
            print(line, flush=True)
        self.write()

    def write(self):
        with open(os.path.join(self.out, "gpu_suite.json"), "w") as f:
            json.dump(self.data, f, indent=1)
        meta = self.data["meta"]
        head = [f"# GPU suite: {meta['device_name']}", "",
                f"torch {meta['torch']}, CUDA {meta['cuda']}, {meta['cpus']} CPU cores, "
                f"{'tiny sizes' if meta['tiny'] else 'full sizes'}, started {meta['start']}", ""]
        with open(os.path.join(self.out, "gpu_suite.md"), "w") as f:
            f.write("\n".join(head + self.lines) + "\n")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def forward_limit(args, device):
    """Images/s of encode_image on device-resident random input, per backbone x precision."""
    from trainers.clip_trainer import build_untrained_clip

    figures, lines = {}, ["| backbone | precision | batch | img/s |", "| --- | --- | --- | --- |"]
    for name in args.backbones:
        model = build_untrained_clip(name, device).eval()
        size = model.visual.input_resolution
        for prec in args.precisions:
            dtype = torch.float16 if prec == "fp16" else torch.float32
            if prec == "fp16" and device.type == "cpu":
                continue  # fp16 convolutions on a CPU are not a path anyone runs
            m = model.half() if prec == "fp16" else model.float()
            images = torch.randn(args.forward_batch, 3, size, size, device=device, dtype=dtype)
            if device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
                m = m.to(memory_format=torch.channels_last)
            with torch.inference_mode(), torch.autocast(device.type, enabled=prec == "amp"):
                for _ in range(2 if device.type == "cuda" else 1):
                    m.encode_image(images)
                sync(device)
                start, count = time.perf_counter(), 0
                while count < 2 or time.perf_counter() - start < args.forward_seconds:
                    m.encode_image(images)
                    count += 1
                sync(device)
            rate = count * args.forward_batch / (time.perf_counter() - start)
            figures[f"{name}/{prec}"] = rate
            lines.append(f"| {name} | {prec}{' channels_last' if device.type == 'cuda' else ''} | "
                         f"{args.forward_batch} | {rate:.0f} |")
        del model
    return figures, lines


def make_jpegs(folder, count, size, workers):
    from scripts.bench.bench_feature_cache import make_task

    data, _ = make_task(folder, max(1, count // 10), 10, 0, size, workers)
    images = os.path.join(data, "imagenet", "images", "train")
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(images) for f in fs)[:count]


def decode_throughput(args, device):
    """Decode + random resized crop to 224 (+ flip) per second: CPU workers vs the device."""
    from torch.utils.data import DataLoader

    from engine.config import get_cfg_default
    from engine.data.datasets import Datum
    from engine.data.device_decode import DevicePipeline, decode_images
    from engine.data.transforms import build_transform
    from engine.features import _bytes_batch, _cat_views, _FileBytes, _ViewsOfImage, split_transform

    paths = make_jpegs(os.path.join(args.out, "decode"), args.decode_images, args.size, args.workers)
    items = [Datum(impath=p, label=0, classname="x") for p in paths]
    cfg = get_cfg_default()
    cfg.INPUT.SIZE, cfg.INPUT.INTERPOLATION = (224, 224), "bicubic"
    cfg.INPUT.TRANSFORMS = ["random_resized_crop", "random_flip", "normalize"]
    tfm = build_transform(cfg, True)
    worker, _ = split_transform(tfm)
    views = {i: [0] for i in range(len(items))}
    figures = {}
    cpu_loader = DataLoader(_ViewsOfImage(items, worker, views, "", 1), batch_size=args.decode_batch,
                            num_workers=args.workers, collate_fn=_cat_views)
    start, n = time.perf_counter(), 0
    for batch in cpu_loader:
        n += batch["img"].to(device).shape[0]
    sync(device)
    figures["cpu_workers_img_s"] = n / (time.perf_counter() - start)
    pipeline = DevicePipeline.from_transform(tfm)
    dev_loader = DataLoader(_FileBytes(items), batch_size=args.decode_batch, num_workers=args.workers,
                            collate_fn=_bytes_batch)
    from engine.data.data_manager import view_seed

    start, n, worst, mean_sum = time.perf_counter(), 0, 0.0, 0.0
    first = None
    for batch in dev_loader:
        images = decode_images(batch["data"], device)
        out = [pipeline.views(img, [view_seed(items[i].impath, 0, 1)]) for i, img in zip(batch["index"], images)]
        n += len(out)
        first = first or (batch["index"][0], out[0][0])
    sync(device)
    figures["device_img_s"] = n / (time.perf_counter() - start)
    # pixel distance of the two paths on the first images (crop boxes are the same by construction)
    for i in range(min(8, len(items))):
        cpu_view = _ViewsOfImage(items, worker, {i: [0]}, "", 1)[i]["img"][0]
        dev_view = pipeline.views(decode_images(_bytes_batch([_FileBytes(items)[i]])["data"], device)[0],
                                  [view_seed(items[i].impath, 0, 1)])[0].cpu()
        d = (cpu_view.int() - dev_view.int()).abs().float()
        worst, mean_sum = max(worst, d.max().item()), mean_sum + d.mean().item()
    figures["max_levels"], figures["mean_levels"] = worst, mean_sum / min(8, len(items))
    lines = [f"{len(items)} JPEGs of {args.size} px, random resized crop to 224 + flip, batch {args.decode_batch}:",
             f"- CPU loader workers ({args.workers}, Pillow): {figures['cpu_workers_img_s']:.0f} img/s",
             f"- on {device} (decode_jpeg + tensor crops, workers only read bytes): {figures['device_img_s']:.0f} img/s",
             f"- pixels apart: at most {worst:.0f} grey levels, {figures['mean_levels']:.2f} on average"]
    return figures, lines


def feature_cache_runs(args, device):
    """bench_feature_cache.py's cold / warm / end-to-end runs (+ a cold run with device decoding)."""
    from scripts.bench import bench_feature_cache as bfc

    common = ["--device", device.type, "--classes", args.classes, "--shots", args.shots,
              "--test-per-class", args.test_per_class, "--epochs", args.epochs, "--size", args.size,
              "--workers", args.workers, "--backbone", args.backbone, "--prec", args.prec,
              "--e2e-epochs", 1, "--threads", 0 if device.type == "cuda" else 1]
    common = [str(a) for a in common]
    figures, lines = {}, []
    for decode, modes in (("cpu", "cold,warm,e2e"), ("device", "cold")):
        out = os.path.join(args.out, f"feature_cache_{decode}")
        print(f"feature cache, decode on {decode}: {modes} ...", flush=True)
        bfc.main(common + ["--out", out, "--modes", modes, "--decode", decode])
        with open(os.path.join(out, "bench_results.json")) as f:
            res = json.load(f)
        figures[decode] = res
        cold = res["results"]["cold"]
        rate = cold["encoded"] / cold["encode_s"] if cold["encode_s"] else 0.0
        lines.append(f"- decode {decode}: cold run {cold['wall_s']:.1f} s ({cold['encoded']} views encoded at "
                     f"{rate:.0f} img/s = {100 * rate / cold['forward_img_s']:.0f}% of the forward limit "
                     f"{cold['forward_img_s']:.0f} img/s), {args.epochs} TaskRes epochs included")
        if "warm" in res["results"]:
            lines.append(f"- warm re-run: {res['results']['warm']['wall_s']:.1f} s, "
                         f"{res['results']['warm']['encoded']} views encoded")
        if "e2e" in res["results"]:
            e2e = res["results"]["e2e"]
            lines.append(f"- end-to-end loop: {sum(e2e['epoch_s']) / len(e2e['epoch_s']):.2f} s per epoch "
                         f"({e2e['train_images']} images)")
    return figures, lines


def text_step_seconds(args, device, classes):
    """One StrongBase-like step: the text tower forward + backward over ``classes`` prompts."""
    import clip
    from trainers.clip_trainer import build_untrained_clip

    model = build_untrained_clip(args.backbone, device).float()
    tokens = clip.tokenize([f"a photo of a class {i}." for i in range(classes)]).to(device)
    model.text_projection.requires_grad_(True)
    times = []
    for _ in range(3):
        sync(device)
        start = time.perf_counter()
        model.encode_text(tokens).float().pow(2).mean().backward()
        sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def projections(args, device, cache_figures, text_step, text_classes):
    """One 16-shot ImageNet run and the whole protocol, from the measured per-image and per-step rates."""
    res = cache_figures["cpu"]["results"]
    cold, e2e = res["cold"], res["e2e"]
    encode_rate = cold["encoded"] / cold["encode_s"]
    steps_measured = math.ceil(cold["train_images"] / 256) * args.epochs
    step_s = max(cold["wall_s"] - cold["encode_s"], 0.0) / max(steps_measured, 1)  # incl. setup: an upper bound
    e2e_img_s = e2e["train_images"] / (sum(e2e["epoch_s"]) / len(e2e["epoch_s"]))

    def run_seconds(classes, test, shots, epochs, test_encoded):
        n = classes * shots
        encode = (n * min(VIEWS, epochs) + classes * min(shots, 4) + (test if test_encoded else 0)) / encode_rate
        return encode + math.ceil(n / 256) * epochs * step_s

    one = run_seconds(1000, 50000, 16, 200, True)
    original = (16000 * 200 + 50000) / e2e_img_s
    total, test_done = 0.0, set()
    for name, (classes, test) in DATASETS.items():
        for shots in SHOTS:
            for _seed in SEEDS:
                for _base in ("regular", "enhanced"):
                    total += run_seconds(classes, test, shots, TASKRES_EPOCHS[shots], name not in test_done)
                    test_done.add(name)
            # one enhanced base per (dataset, shots): the text tower every step, 50 epochs
            total += math.ceil(classes * shots / 256) * STRONG_BASE_EPOCHS * text_step * classes / text_classes
    total += sum(DG_TARGETS.values()) / encode_rate  # DG: encode each target once, 3 seeds x 2 bases evaluate
    figures = {"one_run_s": one, "original_one_run_s": original, "speedup": original / one,
               "protocol_s": total, "encode_img_s": encode_rate, "cached_step_s": step_s,
               "e2e_img_s": e2e_img_s, "strong_base_step_s": text_step, "strong_base_step_classes": text_classes}
    lines = [f"measured rates: encoding {encode_rate:.0f} img/s, a cached TaskRes step {1000 * step_s:.2f} ms "
             f"(setup included), the end-to-end loop {e2e_img_s:.0f} img/s, a StrongBase step over "
             f"{text_classes} prompts {1000 * text_step:.0f} ms (scaled by classes)",
             f"- one 16-shot ImageNet RN50 run (16,000 x {VIEWS} views + 50,000 test, 200 epochs): "
             f"{one:.0f} s projected; end to end at our loop's rate (faster than the original's, so a lower bound on the speed-up) {original:.0f} s "
             f"(measured on an H100 in session 1: {ORIGINAL_H100_S} s): {original / one:.0f}x",
             f"- whole protocol (11 datasets x 5 shots x 3 seeds x regular + enhanced, enhanced bases, DG "
             f"to 4 targets): {total / 60:.1f} min projected",
             "targets (issue 22): one run >= 50x the original, warm re-run < 10 s, protocol < 20 min"]
    return figures, lines


def cuda_tests(args):
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda", "-rs",
                           "tests/test_cuda.py"], cwd=ROOT, capture_output=True, text=True, timeout=args.tests_timeout)
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
    return {"returncode": proc.returncode, "tail": tail}, ["```"] + tail + ["```"]


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when available")
    p.add_argument("--tiny", action="store_true", help="toy sizes: the CPU mode CI runs so the script cannot rot")
    p.add_argument("--out", default=os.path.join(ROOT, "output", "gpu_suite"))
    p.add_argument("--steps", default="forward,decode,cache,project,tests",
                   help="comma-separated subset of forward,decode,cache,project,tests")
    return p


def sizes(args):
    """The full sizes (GPU) or the toy ones (--tiny)."""
    full = dict(backbones=["RN50", "ViT-B/16"], precisions=["fp32", "fp16", "amp"], forward_batch=256,
                forward_seconds=5.0, decode_images=2000, decode_batch=64, size=400,
                workers=min(16, os.cpu_count() or 1), classes=1000, shots=16, test_per_class=10, epochs=200,
                backbone="RN50", prec="fp16", tests_timeout=300)
    tiny = dict(backbones=["ViT-B/32"], precisions=["fp32", "amp"], forward_batch=2, forward_seconds=0.2,
                decode_images=8, decode_batch=4, size=64, workers=0, classes=3, shots=2, test_per_class=1,
                epochs=2, backbone="ViT-B/32", prec="fp32", tests_timeout=120)
    for key, value in (tiny if args.tiny else full).items():
        setattr(args, key, value)


def main(argv=None):
    args = build_parser().parse_args(argv)
    sizes(args)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    args.out = os.path.abspath(args.out)
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    meta = {"device_name": torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()})",
            "torch": torch.__version__, "cuda": torch.version.cuda, "cpus": os.cpu_count(), "tiny": args.tiny,
            "start": time.strftime("%Y-%m-%d %H:%M:%S")}
    report = Report(args.out, meta)
    suite_start = time.perf_counter()
    cache = None
    if "forward" in steps:
        report.step("1. forward limit", *forward_limit(args, device))
    if "decode" in steps:
        report.step("2. decode throughput", *decode_throughput(args, device))
    if "cache" in steps:
        cache, lines = feature_cache_runs(args, device)
        report.step("3. feature cache: cold, device decode, warm, end to end", cache, lines)
    if "project" in steps and cache is not None:
        text_classes = 8 if args.tiny else 1000
        text_step = text_step_seconds(args, device, text_classes)
        report.step("4. projections", *projections(args, device, cache, text_step, text_classes))
    if "tests" in steps:
        if device.type == "cuda":
            report.step("5. CUDA tests", *cuda_tests(args))
        else:
            report.step("5. CUDA tests", {"skipped": "no CUDA device"}, ["skipped: no CUDA device here"])
    report.data["meta"]["wall_s"] = time.perf_counter() - suite_start
    report.write()
    print(f"suite done in {report.data['meta']['wall_s']:.0f} s: {os.path.join(args.out, 'gpu_suite.md')}")
    return report.data


if __name__ == "__main__":
    main()
