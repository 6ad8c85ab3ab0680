"""Parity of our KgCoOp, ProGrad and CLAP against their original repositories, run side by side
on the same inputs (not a test: it needs the originals and a Dassl; a minute or two per method).

    python scripts/parity/text_methods.py --python /tmp/orig/venv/bin/python \\
        --dassl /tmp/orig/Dassl.ProGrad.pytorch --upstream-dassl /tmp/orig/Dassl.pytorch \\
        --kgcoop-repo /tmp/orig/KgCoOp --prograd-repo /tmp/orig/Prompt-align --clap-repo /tmp/orig/CLAP \\
        --work /tmp/parity

``--python`` is an interpreter with torch (and what Dassl imports) but no Dassl: the script puts a
patched copy of the right Dassl on its path per method, never into the project's venv. KgCoOp and
ProGrad run on the ProGrad fork that both repos ship (``Dassl.ProGrad.pytorch``), CLAP on upstream
KaiyangZhou/Dassl.pytorch (c61a1b5). The repos are the unpacked snapshots (htyao89/KgCoOp c43ccc3
holds ``KgCoOp/``, BeierZhu/Prompt-align 1b76203 ``ProGrad.public/``, jusiro/CLAP dbdf409 is the
folder itself); each is copied under ``--work`` and patched only to run on a CPU without downloads
(``PATCHES`` and ``DASSL_PATCHES`` list every change). Same inputs on both sides:

- one tiny OpenAI-format CLIP file (tests/clip_fixtures.py, ViT, 32 px, seed 0, every value fp16-exact);
- Fashion-MNIST t10k images in EuroSAT's layout (``eurosat/2750/<Class>/``, split_zhou_EuroSAT.json),
  one fresh copy per side, so each side draws and stores its own few-shot split;
- the same seed, PREC fp32, transforms ``normalize`` only, one full batch per epoch, the context
  initialised from text (CTX_INIT True), so nothing random is left but the few-shot draw.

Compared: the few-shot draw (image paths of each side's split_fewshot file), the test accuracy,
the learnt tensor (the context; CLAP's prototypes) as max|ours - orig| / max|orig - init|, the
checkpoint keys, and each side evaluating the other's checkpoint (``--eval-only --model-dir``).
CLAP trains on 20 views per image pooled in one batch (1 shot: 10 x 20 = 200 <= 256), so the
original's numpy shuffle changes nothing but the summation order. Prints a table and writes
``<work>/parity.json``.
"""
import argparse
import gzip
import json
import os
import pickle
import re
import shutil
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

FASHION = "/usr/share/datasets/fashion-mnist"
EUROSAT = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture", "PermanentCrop",
           "Residential", "River", "SeaLake"]
EUROSAT_NAMES = ["Annual Crop Land", "Forest", "Herbaceous Vegetation Land", "Highway or Road",
                 "Industrial Buildings", "Pasture Land", "Permanent Crop Land", "Residential Buildings", "River",
                 "Sea or Lake"]
SPLIT = {"train": 8, "val": 4, "test": 10}  # images per class and split

# Every change made to the originals, (file, old text, new text): CPU and offline only.
LOAD_LOCAL = ('    url = clip._MODELS[backbone_name]\n    model_path = clip._download(url)\n',
              '    model_path = __import__("os").environ["PARITY_CLIP_WEIGHTS"]  # parity: a local file\n')
DASSL_PATCHES = [
    # torch >= 2.7 removed LRScheduler's verbose argument
    ("dassl/optim/lr_scheduler.py", "super().__init__(optimizer, last_epoch, verbose)",
     "super().__init__(optimizer, last_epoch)"),
    # torch >= 2.6 loads weights only by default; Dassl's checkpoints are its own
    ("dassl/utils/torchtools.py", "checkpoint = torch.load(fpath, map_location=map_location)",
     "checkpoint = torch.load(fpath, map_location=map_location, weights_only=False)"),
]
PATCHES = {
    "KgCoOp": [("trainers/kgcoop.py", *LOAD_LOCAL),
               ("trainers/kgcoop.py", "clip_model_.cuda()", "clip_model_.cpu()"),
               ("trainers/kgcoop.py", "prompts_ = prompts_.cuda()", "prompts_ = prompts_.cpu()")],
    "ProGrad": [("trainers/prograd.py", *LOAD_LOCAL),
                ("trainers/prograd.py", "self.zs_clip = self.zs_clip.cuda()", "self.zs_clip = self.zs_clip.cpu()")],
    "CLAP": [("trainers/adapters.py", *LOAD_LOCAL),
             ("trainers/adapters.py", "text_encoder(embeddings.cuda(), tokens.cuda())", "text_encoder(embeddings, tokens)"),
             ("trainers/adapters.py", "compute_accuracy(output_test.cuda(), self.labels_test.cuda())",
              "compute_accuracy(output_test, self.labels_test)")],
}
SUBDIR = {"KgCoOp": "KgCoOp", "ProGrad": "ProGrad.public", "CLAP": "."}
ORIGINAL_TRAINER = {"KgCoOp": "KgCoOp", "ProGrad": "ProGrad", "CLAP": "ADAPTER"}
LEARNT = {"KgCoOp": ("prompt_learner", "ctx"), "ProGrad": ("prompt_learner", "ctx"), "CLAP": ("adapter", "prototypes")}
SHOTS = {"KgCoOp": 2, "ProGrad": 2, "CLAP": 1}  # CLAP: 10 images x 20 views in one batch of 256

CONFIG = """\
DATALOADER:
  TRAIN_X:
    BATCH_SIZE: {batch}
  TEST:
    BATCH_SIZE: 100
  NUM_WORKERS: 0
INPUT:
  SIZE: (32, 32)
  INTERPOLATION: "bicubic"
  PIXEL_MEAN: [0.48145466, 0.4578275, 0.40821073]
  PIXEL_STD: [0.26862954, 0.26130258, 0.27577711]
  TRANSFORMS: ["normalize"]
OPTIM:
  NAME: "sgd"
  LR: {lr}
  MAX_EPOCH: {epochs}
  LR_SCHEDULER: "cosine"
  WARMUP_EPOCH: 1
  WARMUP_TYPE: "constant"
  WARMUP_CONS_LR: 1e-5
TRAIN:
  PRINT_FREQ: 5
MODEL:
  BACKBONE:
    NAME: "{weights}"
"""
# Method settings per side: (ours, original) opts. Published scripts: KgCoOp N_CTX 4, W 8.0;
# ProGrad N_CTX 16, LAMBDA 1.0, T 1.0.
OPTS = {
    "KgCoOp": (["TRAINER.KGCOOP.N_CTX", "4", "TRAINER.KGCOOP.CTX_INIT", "True", "TRAINER.KGCOOP.W", "8.0",
                "TRAINER.KGCOOP.PREC", "fp32"],
               ["TRAINER.COOP.N_CTX", "4", "TRAINER.COOP.CTX_INIT", "True", "TRAINER.COOP.W", "8.0",
                "TRAINER.COOP.PREC", "fp32"]),
    "ProGrad": (["TRAINER.PROGRAD.N_CTX", "16", "TRAINER.PROGRAD.CTX_INIT", "True", "TRAINER.PROGRAD.LAMBDA", "1.0",
                 "TRAINER.PROGRAD.T", "1.0", "TRAINER.PROGRAD.PREC", "fp32"],
                ["TRAINER.COOP.N_CTX", "16", "TRAINER.COOP.CTX_INIT", "True", "LOSS.NAME", "prograd",
                 "LOSS.LAMBDA", "1.0", "LOSS.T", "1.0", "TRAINER.COOP.PREC", "fp32"]),
    "CLAP": (["TRAINER.CLAP.INIT", "ZS", "TRAINER.CLAP.CONSTRAINT", "l2", "TRAINER.CLAP.PREC", "fp32"],
             ["TRAINER.ADAPTER.INIT", "ZS", "TRAINER.ADAPTER.CONSTRAINT", "l2", "TRAINER.ADAPTER.PREC", "fp32"]),
}


def fp16_exact_clip(path):
    """The tiny CLIP with every float rounded to fp16 (stored as fp32): the original's build_model
    rounds its weights and biases to fp16 (then .float() for PREC fp32), which then loses nothing,
    so both sides compute with the same numbers."""
    from clip_fixtures import make_tiny_clip_state_dict

    state = make_tiny_clip_state_dict("vit", seed=0)
    torch.save({k: v.half().float() if v.is_floating_point() else v for k, v in state.items()}, path)
    return path


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def write_eurosat(root):
    """Fashion-MNIST t10k images as EuroSAT (label i -> EuroSAT's i-th class), with a split file."""
    images = read_idx(os.path.join(FASHION, "t10k-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(FASHION, "t10k-labels-idx1-ubyte.gz"))
    split = {name: [] for name in SPLIT}
    per_class = sum(SPLIT.values())
    for label, folder in enumerate(EUROSAT):
        os.makedirs(os.path.join(root, "eurosat", "2750", folder), exist_ok=True)
        index = np.flatnonzero(labels == label)[:per_class]
        start = 0
        for name, count in SPLIT.items():
            for i in index[start:start + count]:
                rel = f"{folder}/{folder}_{i}.jpg"
                Image.fromarray(images[i]).convert("RGB").save(os.path.join(root, "eurosat", "2750", rel), quality=95)
                split[name].append([rel, label, EUROSAT_NAMES[label]])
            start += count
    with open(os.path.join(root, "eurosat", "split_zhou_EuroSAT.json"), "w") as f:
        json.dump(split, f)
    return root


def prepare_original(method, repo, work):
    """A patched copy of the original's folder under ``work``."""
    dst = os.path.join(work, "orig_" + method)
    if os.path.exists(dst):
        shutil.rmtree(dst)
    shutil.copytree(os.path.join(repo, SUBDIR[method]), dst)
    for rel, old, new in PATCHES[method]:
        patch(os.path.join(dst, rel), old, new)
    return dst


def patch(path, old, new):
    with open(path) as f:
        text = f.read()
    if old not in text:
        raise SystemExit(f"parity: {path} does not contain the text to patch ({old.strip()[:60]!r}); "
                         "is it the snapshot named in the docstring?")
    with open(path, "w") as f:
        f.write(text.replace(old, new))


def patched_dassl(dassl_src, work):
    """A patched copy of a Dassl, and beside it a stub of ``wilds`` (upstream Dassl imports it for
    datasets no run here uses): the path entries to put first."""
    dst = os.path.join(work, "Dassl")
    if os.path.exists(dst):
        shutil.rmtree(dst)
    shutil.copytree(dassl_src, dst)
    for rel, old, new in DASSL_PATCHES:
        patch(os.path.join(dst, rel), old, new)
    stubs = os.path.join(work, "stubs", "wilds")
    os.makedirs(stubs, exist_ok=True)
    with open(os.path.join(stubs, "__init__.py"), "w") as f:
        f.write("def get_dataset(*args, **kwargs):\n    raise RuntimeError('wilds is a parity stub here')\n")
    return os.pathsep.join([dst, os.path.dirname(stubs)])


def run(cmd, cwd, env, log):
    with open(log, "w") as f:
        proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        with open(log) as f:
            tail = f.read()[-3000:]
        raise SystemExit(f"parity: {' '.join(map(str, cmd[:4]))} ... failed (see {log}):\n{tail}")


def last_accuracy(log_text):
    found = re.findall(r"\* accuracy: ([\d.]+)%", log_text)
    return float(found[-1]) if found else None


class _Stub:
    """Any pickled class (Dassl's Datum or ours): keeps its attributes."""

    def __setstate__(self, state):
        if isinstance(state, tuple):  # (dict, slots)
            state = {**(state[0] or {}), **(state[1] or {})}
        self.__dict__.update(state)


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if name == "Datum":
            return _Stub
        return super().find_class(module, name)


def fewshot_draw(data_root, shots, seed):
    """Image paths (relative to the dataset folder) of the train and val few-shot draw a run stored:
    CoOp's pickle of Dassl Datums (the original) or our JSON (ours; it would read the pickle too)."""
    folder = os.path.join(data_root, "eurosat", "split_fewshot")
    pkl = os.path.join(folder, f"shot_{shots}-seed_{seed}.pkl")
    if os.path.exists(pkl):
        with open(pkl, "rb") as f:
            data = _Unpickler(f).load()
        rel = lambda d: os.path.relpath(d.__dict__["_impath"], os.path.join(data_root, "eurosat"))  # noqa: E731
        return {split: [rel(d) for d in data[split]] for split in ("train", "val")}
    with open(os.path.join(folder, f"shot_{shots}-seed_{seed}.json")) as f:
        data = json.load(f)
    return {split: [row[0] for row in data[split]] for split in ("train", "val")}


def initial_value(method, weights, classnames, state_dict):
    """The learnt tensor before training: the text-initialised context, or CLAP's zero-shot prototypes."""
    import clip
    from trainers import coop, prograd

    if method == "CLAP":
        return state_dict["base_text_features"].float()
    model, _ = clip.load(weights, device="cpu")
    model = model.float().eval()
    if method == "KgCoOp":
        return coop.init_context(model, 4, "a photo of a", (), torch.float32)[0]
    words = prograd.TEMPLATES["EuroSAT"].replace(" {}.", "")
    return prograd.ProGradPromptLearner(classnames, model, init_words=words, n_ctx=16).ctx.detach()


def checkpoint_state(out, module, epoch):
    path = os.path.join(out, module, f"model.pth.tar-{epoch}")
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def accuracy(folder):
    """The run's test accuracy: the last ``* accuracy`` line, else the last ``acc_test`` (CLAP's
    original reports its test accuracy only in its training log lines)."""
    with open(os.path.join(folder, "log.txt")) as f:
        text = f.read()
    found = last_accuracy(text)
    if found is None:
        values = re.findall(r"acc_test ([\d.]+) \(", text)
        found = float(values[-1]) if values else None
    return found


def compare(method, args, weights, dassl):
    work = os.path.join(args.work, method)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    orig_dir = prepare_original(method, getattr(args, f"{method.lower()}_repo"), work)
    shots = SHOTS[method]
    batch = 256 if method == "CLAP" else len(EUROSAT) * shots  # one full batch per epoch
    with open(os.path.join(work, "cfg.yaml"), "w") as f:
        f.write(CONFIG.format(batch=batch, lr=args.lr, epochs=args.epochs, weights=weights))
    cfg = os.path.join(work, "cfg.yaml")
    data = {side: write_eurosat(os.path.join(work, "data_" + side)) for side in ("ours", "orig")}
    ours_opts, orig_opts = OPTS[method]
    common = ["--seed", args.seed, "--config-file", cfg,
              "--dataset-config-file", "configs/datasets/eurosat.yaml"]  # each side's own (run in its folder)
    env = dict(os.environ, PARITY_CLIP_WEIGHTS=weights, CUDA_VISIBLE_DEVICES="")
    orig_env = dict(env, PYTHONPATH=os.pathsep.join([dassl, orig_dir]))
    out = {side: os.path.join(work, "out_" + side) for side in ("ours", "orig")}
    ours_cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--trainer", method]
    orig_cmd = [args.python, "train.py", "--trainer", ORIGINAL_TRAINER[method]]
    ours_opts, orig_opts = ["DATASET.NUM_SHOTS", shots, *ours_opts], ["DATASET.NUM_SHOTS", shots, *orig_opts]
    run(ours_cmd + ["--root", data["ours"], "--output-dir", out["ours"], *common, *ours_opts],
        ROOT, env, os.path.join(work, "ours.log"))
    run(orig_cmd + ["--root", data["orig"], "--output-dir", out["orig"], *common, *orig_opts],
        orig_dir, orig_env, os.path.join(work, "orig.log"))
    # each side evaluates the other's checkpoint
    load = ["--eval-only", "--load-epoch", args.epochs]
    run(ours_cmd + ["--root", data["ours"], "--output-dir", out["ours"] + "_eval_orig", "--model-dir", out["orig"],
                    *load, *common, *ours_opts], ROOT, env, os.path.join(work, "ours_eval.log"))
    run(orig_cmd + ["--root", data["orig"], "--output-dir", out["orig"] + "_eval_ours", "--model-dir", out["ours"],
                    *load, *common, *orig_opts], orig_dir, orig_env, os.path.join(work, "orig_eval.log"))

    draws = {side: fewshot_draw(data[side], shots, args.seed) for side in data}
    module, key = LEARNT[method]
    states = {side: checkpoint_state(out[side], module, args.epochs) for side in out}
    learnt = {side: states[side][key].float() for side in states}
    init = initial_value(method, weights, EUROSAT_NAMES, states["orig"])
    movement = (learnt["orig"] - init).abs().max().item()
    diff = (learnt["ours"] - learnt["orig"]).abs().max().item()
    extra = {}
    if method == "CLAP":  # each side starts from its own zero-shot base (its text encoder's): compare the updates
        bases = {side: states[side]["base_text_features"].float() for side in states}
        update = {side: learnt[side] - bases[side] for side in states}
        extra = {"base_max_abs_diff": (bases["ours"] - bases["orig"]).abs().max().item(),
                 "update_ratio": (update["ours"] - update["orig"]).abs().max().item() / update["orig"].abs().max().item()}
    return {
        **extra,
        "method": method, "learnt": key, "shots": shots, "epochs": args.epochs, "lr": args.lr,
        "same_fewshot_draw": draws["ours"] == draws["orig"],
        "accuracy_ours": accuracy(out["ours"]), "accuracy_orig": accuracy(out["orig"]),
        "ours_on_orig_checkpoint": accuracy(out["ours"] + "_eval_orig"),
        "orig_on_our_checkpoint": accuracy(out["orig"] + "_eval_ours"),
        "max_abs_diff": diff, "movement": movement, "ratio": diff / movement,
        "checkpoint_keys_ours": sorted(states["ours"]), "checkpoint_keys_orig": sorted(states["orig"]),
    }


# KgCoOp's original encodes its hand-crafted prompts with a second CLIP kept in fp16 (on this CPU
# too); ours encodes them in the trainer's precision (fp32 here). fp16 arithmetic differs between
# implementations at ~1e-3, so for a like-for-like check the original's reference features, as its
# forward uses them (fp16), are recorded (a wrapper observes its CustomCLIP; no file of it changes)
# and handed to ours, whose penalty then takes them in fp16 as the original's does.
RECORD_REFERENCE = """
import runpy, sys, torch
sys.path.insert(0, ".")
import trainers.kgcoop as k
init = k.CustomCLIP.__init__
def record(self, *a, **kw):
    init(self, *a, **kw)
    ref = self.ori_embedding  # fp16; its forward normalises it again in fp16, then the cosine promotes it
    torch.save((ref / ref.norm(dim=-1, keepdim=True)).float().cpu(), {path!r})
k.CustomCLIP.__init__ = record
sys.argv = ["train.py"] + sys.argv[1:]
runpy.run_path("train.py", run_name="__main__")
"""
GIVEN_REFERENCE = """
import sys, torch
sys.path.insert(0, {root!r})
import trainers.kgcoop as k
k.hand_crafted_features = lambda *a: torch.load({path!r}).half()
# the original's cosine takes the fp16 reference as it is: torch's cosine_similarity of (fp32, fp16)
# differs from the fp32 one by ~1e-4 in its gradient
k.knowledge_gap = lambda text, hand: 1.0 - torch.nn.CosineSimilarity(dim=1, eps=1e-07)(text, hand).mean()
import train
train.main(sys.argv[1:])
"""


def kgcoop_same_reference(args, weights, dassl):
    """KgCoOp again, ours given the original's fp16 hand-crafted features: the rest of the method alone."""
    work = os.path.join(args.work, "KgCoOp_same_reference")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    orig_dir = prepare_original("KgCoOp", args.kgcoop_repo, work)
    reference = os.path.join(work, "reference.pt")
    with open(os.path.join(work, "cfg.yaml"), "w") as f:
        f.write(CONFIG.format(batch=len(EUROSAT) * SHOTS["KgCoOp"], lr=args.lr, epochs=args.epochs, weights=weights))
    common = ["--seed", args.seed, "--config-file", os.path.join(work, "cfg.yaml"), "--trainer", "KgCoOp",
              "--dataset-config-file", "configs/datasets/eurosat.yaml", "DATASET.NUM_SHOTS", SHOTS["KgCoOp"]]
    env = dict(os.environ, PARITY_CLIP_WEIGHTS=weights, CUDA_VISIBLE_DEVICES="")
    out = {side: os.path.join(work, "out_" + side) for side in ("ours", "orig")}
    ours_opts, orig_opts = OPTS["KgCoOp"]
    run([args.python, "-c", RECORD_REFERENCE.format(path=reference), "--root",
         write_eurosat(os.path.join(work, "data_orig")), "--output-dir", out["orig"], *common, *orig_opts],
        orig_dir, dict(env, PYTHONPATH=os.pathsep.join([dassl, orig_dir])), os.path.join(work, "orig.log"))
    run([sys.executable, "-c", GIVEN_REFERENCE.format(root=ROOT, path=reference), "--root",
         write_eurosat(os.path.join(work, "data_ours")), "--output-dir", out["ours"], *common, *ours_opts],
        ROOT, env, os.path.join(work, "ours.log"))
    learnt = {side: checkpoint_state(out[side], "prompt_learner", args.epochs)["ctx"].float() for side in out}
    init = initial_value("KgCoOp", weights, EUROSAT_NAMES, None)
    diff = (learnt["ours"] - learnt["orig"]).abs().max().item()
    movement = (learnt["orig"] - init).abs().max().item()
    return {"method": "KgCoOp, same fp16 reference", "learnt": "ctx", "shots": SHOTS["KgCoOp"], "epochs": args.epochs,
            "lr": args.lr, "same_fewshot_draw": None, "accuracy_ours": accuracy(out["ours"]),
            "accuracy_orig": accuracy(out["orig"]), "ours_on_orig_checkpoint": None, "orig_on_our_checkpoint": None,
            "max_abs_diff": diff, "movement": movement, "ratio": diff / movement}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--python", required=True, help="interpreter with torch and Dassl's requirements (no Dassl)")
    p.add_argument("--dassl", required=True, help="Dassl.ProGrad.pytorch folder (copied and patched)")
    p.add_argument("--upstream-dassl", help="KaiyangZhou/Dassl.pytorch folder, for CLAP (copied and patched)")
    p.add_argument("--kgcoop-repo", help="unpacked htyao89/KgCoOp (holds KgCoOp/)")
    p.add_argument("--prograd-repo", help="unpacked BeierZhu/Prompt-align (holds ProGrad.public/)")
    p.add_argument("--clap-repo", help="unpacked jusiro/CLAP")
    p.add_argument("--work", required=True, help="scratch folder (outside the project)")
    p.add_argument("--methods", nargs="+", default=["KgCoOp", "ProGrad", "CLAP"], choices=["KgCoOp", "ProGrad", "CLAP"])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=1)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    weights = fp16_exact_clip(os.path.join(args.work, "tiny_vit_fp16_exact.pt"))
    dassls = {"fork": patched_dassl(args.dassl, os.path.join(args.work, "fork"))}
    if "CLAP" in args.methods:
        dassls["upstream"] = patched_dassl(args.upstream_dassl, os.path.join(args.work, "upstream"))
    results = [compare(m, args, weights, dassls["upstream" if m == "CLAP" else "fork"]) for m in args.methods]
    if "KgCoOp" in args.methods:
        results.append(kgcoop_same_reference(args, weights, dassls["fork"]))
    with open(os.path.join(args.work, "parity.json"), "w") as f:
        json.dump(results, f, indent=1)
    print("| method | same draw | acc ours / orig | ours on orig ckpt / orig on ours | max|diff| / movement |")
    print("| --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['method']} ({r['learnt']}) | {r['same_fewshot_draw']} | {r['accuracy_ours']} / {r['accuracy_orig']} | "
              f"{r['ours_on_orig_checkpoint']} / {r['orig_on_our_checkpoint']} | "
              f"{r['max_abs_diff']:.2e} / {r['movement']:.2e} = {r['ratio']:.2e} |")
        if "update_ratio" in r:
            print(f"|   {r['method']}: bases differ by {r['base_max_abs_diff']:.2e}; updates w - t: "
                  f"max|ours - orig| / max|orig| = {r['update_ratio']:.2e} | | | | |")
    return results


if __name__ == "__main__":
    main()
