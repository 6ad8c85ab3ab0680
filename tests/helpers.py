"""Building blocks for end-to-end tests: a tiny image folder, a tiny CLIP, a tiny config, a run.

    data = make_image_folder(tmp_path / "data")
    cfg = write_tiny_config(tmp_path / "cfg.yaml", clip_path=save_tiny_clip(...))
    trainer = run_train("--root", data, "--config-file", cfg, "--output-dir", out, ...)
"""
import os
import re
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image

from clip_fixtures import save_tiny_clip

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ("cat", "dog", "bird")


def make_image_folder(root, classes=CLASSES, per_class=10, size=(40, 48), seed=0):
    """<root>/<class>/<i>.jpg with a class-specific colour, so a classifier can learn them."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            base = np.zeros((size[0], size[1], 3))
            base[..., c % 3] = 150 + 40 * (c // 3)
            arr = np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(os.path.join(root, name, f"{i}.jpg"))
    return str(root)


def tiny_clip(tmp_path, vision="vit"):
    """A tiny OpenAI-format CLIP file (the tiny ViT: its random features still tell images apart)."""
    path = os.path.join(str(tmp_path), f"tiny_{vision}.pt")
    if not os.path.exists(path):
        save_tiny_clip(path, vision=vision)
    return path


TINY_CONFIG = """\
DATASET:
  NAME: {dataset}
DATALOADER:
  TRAIN_X:
    BATCH_SIZE: {batch}
  TEST:
    BATCH_SIZE: 16
  NUM_WORKERS: 0
INPUT:
  SIZE: (32, 32)
  INTERPOLATION: "bicubic"
  PIXEL_MEAN: [0.48145466, 0.4578275, 0.40821073]
  PIXEL_STD: [0.26862954, 0.26130258, 0.27577711]
  TRANSFORMS: ["random_resized_crop", "random_flip", "normalize"]
OPTIM:
  NAME: "adam"
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
    NAME: "{clip_path}"
"""


def write_tiny_config(path, clip_path, dataset="ImageFolder", epochs=5, lr=0.01, batch=8):
    """The TaskRes config shape (adam, cosine, constant warm-up) scaled to a tiny run."""
    with open(path, "w") as f:
        f.write(TINY_CONFIG.format(dataset=dataset, epochs=epochs, lr=lr, batch=batch, clip_path=clip_path))
    return str(path)


def run_train(*argv):
    """train.main in this process (fast); returns the trainer. Log handlers are closed after."""
    import train
    from engine.utils import close_logger

    try:
        return train.main([str(a) for a in argv])
    finally:
        close_logger()


def run_train_subprocess(*argv, env=None, timeout=300):
    """train.py as a user runs it; returns the CompletedProcess (stdout, stderr, returncode)."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *map(str, argv)],
                          cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)


def accuracies(log_path):
    """Every `* accuracy: X%` value in a log, in order."""
    with open(log_path) as f:
        return [float(x) for x in re.findall(r"\* accuracy: ([\d.]+)%", f.read())]


def copy_run(src, dst):
    """A finished run moved to ``dst``, as if it had been run there (its config names ``dst``)."""
    shutil.copytree(src, dst)
    path = os.path.join(str(dst), "config.yaml")
    with open(path) as f:
        text = f.read().replace(str(src), str(dst))
    with open(path, "w") as f:
        f.write(text)


def default_sigint():
    """preexec_fn for a child that must see Ctrl-C: a process started from one that ignores SIGINT (a
    test run as a background job, `nohup ... &`) inherits the ignore, Python then installs no
    KeyboardInterrupt handler and bash cannot trap it; the child gets the terminal's default."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
