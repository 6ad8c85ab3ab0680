"""Tip-Adapter (training-free, ``TipAdapter``) and Tip-Adapter-F (cache keys fine-tuned,
``TipAdapterF``) as trainers; the math is in ``trainers/methods/tip_adapter.py``.

Both build the cache from the feature cache's training views 0 .. AUGMENT_EPOCH-1 (the views
the training loader replays, so Tip-Adapter-F trains on views its keys averaged), the zero-shot
classifier from the dataset's template (ImageNet: the 7 selected templates), and search
(beta, alpha) on the val split. Differences from gaopengcuhk/Tip-Adapter, and why:
- the val split is the dataset's (CoOp's few-shot val, min(K, 4) per class; ImageNet: its test
  set, as CoOp has no other); the original searched on its full val split;
- Tip-Adapter-F keeps its last epoch (TEST.FINAL_MODEL), where the original evaluates on the
  *test* set after every epoch and keeps the best one: model selection on test, not reproduced;
- training views repeat every FEATURE_CACHE.TRAIN_VIEWS epochs (the original draws fresh crops
  every epoch; TRAIN_VIEWS = OPTIM.MAX_EPOCH gives that), and Dassl's loader drops an
  incomplete last batch when the set holds at least one batch (the original keeps it).

Keys ``TRAINER.TIP_ADAPTER`` mirror the original's yaml: INIT_ALPHA, INIT_BETA, SEARCH_HP,
SEARCH_SCALE [beta, alpha], SEARCH_STEP [beta, alpha], AUGMENT_EPOCH, LR and EPS (AdamW of
Tip-Adapter-F), PREC. Its ``train_epoch`` is OPTIM.MAX_EPOCH and the crop scale (0.5, 1) is
INPUT.RRCROP_SCALE (configs/trainers/TipAdapter*/).
"""
import logging

import torch
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from engine import TRAINER_REGISTRY
from engine.errors import ConfigError
from engine.metrics import compute_accuracy
from engine.protocol import Protocol

from .class_subset import select_classes
from .clip_trainer import PRECISIONS, FrozenCLIPTrainer
from .fit_once import FitOnceTrainer
from .methods.prompt_ensemble import ensemble_classifier
from .methods.tip_adapter import ZERO_SHOT_SCALE, TipAdapterHead, build_cache, search_hp
from .split_features import split_features
from .templates import CUSTOM_TEMPLATES, DEFAULT_TEMPLATE, IMAGENET_TEMPLATES_SELECT
from .text_features import prompt_features

logger = logging.getLogger(__name__)


# The original's configs/<dataset>.yaml, one setting per dataset at every shot count:
# (search_scale [beta, alpha], init_alpha, init_beta, train_epoch); search_step [200, 20],
# augment_epoch 10, lr 0.001 everywhere. configs/trainers/TipAdapter*/<family>_<dataset>.yaml hold them.
PUBLISHED = {
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


def per_dataset_config(dataset, shots, family):
    """Tip-Adapter's config of a run: one per dataset, the same at every shot count."""
    return f"{family}_{dataset}"


def _protocol(label, order):
    return Protocol(label=label, config=per_dataset_config, evaluations=("dg",), order=order,
                    source="gaopengcuhk/Tip-Adapter configs/<dataset>.yaml")


def extend_cfg(cfg):
    """TRAINER.TIP_ADAPTER, defaults from the original's configs/imagenet.yaml."""
    cfg.TRAINER.TIP_ADAPTER = CN()
    cfg.TRAINER.TIP_ADAPTER.PREC = "fp16"  # the original runs CLIP's fp16 weights on the GPU
    cfg.TRAINER.TIP_ADAPTER.INIT_ALPHA = 1.17
    cfg.TRAINER.TIP_ADAPTER.INIT_BETA = 1.0
    cfg.TRAINER.TIP_ADAPTER.SEARCH_HP = True  # search (beta, alpha) on val; False keeps the INIT values
    cfg.TRAINER.TIP_ADAPTER.SEARCH_SCALE = [7.0, 3.0]  # [beta, alpha] upper ends of the grids
    cfg.TRAINER.TIP_ADAPTER.SEARCH_STEP = [200, 20]  # [beta, alpha] grid sizes
    cfg.TRAINER.TIP_ADAPTER.AUGMENT_EPOCH = 10  # augmented views averaged into each cache key
    cfg.TRAINER.TIP_ADAPTER.LR = 0.001  # Tip-Adapter-F: AdamW learning rate (cosine per iteration)
    cfg.TRAINER.TIP_ADAPTER.EPS = 1e-4  # Tip-Adapter-F: AdamW eps (fp16-safe)


def check_tip_cfg(cfg):
    t = cfg.TRAINER.TIP_ADAPTER

    def fail(key, want, value):
        raise ConfigError(f"TRAINER.TIP_ADAPTER.{key} must be {want}, got {value!r}.")

    if t.PREC not in PRECISIONS:
        fail("PREC", f"one of {', '.join(PRECISIONS)}", t.PREC)
    for key in ("INIT_ALPHA", "INIT_BETA", "LR", "EPS"):
        value = getattr(t, key)
        if not isinstance(value, (int, float)) or value < 0 or (key in ("LR", "EPS") and value == 0):
            fail(key, "a positive number" if key in ("LR", "EPS") else "a number >= 0", value)
    if len(t.SEARCH_SCALE) != 2 or not all(isinstance(v, (int, float)) and v > 0 for v in t.SEARCH_SCALE):
        fail("SEARCH_SCALE", "two positive numbers [beta, alpha] (e.g. [7, 3])", t.SEARCH_SCALE)
    if len(t.SEARCH_STEP) != 2 or not all(isinstance(v, int) and v >= 1 for v in t.SEARCH_STEP):
        fail("SEARCH_STEP", "two positive integers [beta, alpha] (e.g. [200, 20])", t.SEARCH_STEP)
    if not isinstance(t.AUGMENT_EPOCH, int) or t.AUGMENT_EPOCH < 1:
        fail("AUGMENT_EPOCH", "a positive integer (the original uses 10)", t.AUGMENT_EPOCH)


def tip_templates(dataset_name):
    """Tip-Adapter's templates: ImageNet's 7 selected ones, else the dataset's CoOp template."""
    if dataset_name == "ImageNet":
        return list(IMAGENET_TEMPLATES_SELECT)
    return [CUSTOM_TEMPLATES.get(dataset_name, DEFAULT_TEMPLATE)]


class _TipAdapterParts:
    """What both variants share: the head, the cache from cached views, the val search."""

    learnable_keys = False

    def trainer_cfg(self):
        return self.cfg.TRAINER.TIP_ADAPTER

    def check_cfg(self, cfg):
        check_tip_cfg(cfg)

    def load_clip_and_head(self):
        """Load CLIP and build the (still empty) cache head; returns it (these trainers write their own
        build_model, so this is not the base class's ``build_head(clip_model)``)."""
        tcfg = self.trainer_cfg()
        clip_model = self.load_clip()
        self.clip_model = clip_model
        classnames = [c.replace("_", " ") for c in self.dm.dataset.classnames]
        templates = tip_templates(self.cfg.DATASET.NAME)
        logger.info("Zero-shot classifier from %d template(s)", len(templates))
        classifier = ensemble_classifier(prompt_features(clip_model, classnames, templates))
        head_dtype = self.dtype if self.prec == "fp16" else torch.float32
        self.model = TipAdapterHead(classifier.to(head_dtype), len(self.dm.dataset.train_x), self.num_classes,
                                    tcfg.INIT_ALPHA, tcfg.INIT_BETA, ZERO_SHOT_SCALE,
                                    learnable_keys=self.learnable_keys).to(self.device)
        return self.model

    def model_inference(self, inputs):
        feats = inputs if inputs.dim() == 2 else self.encode_images(inputs)
        return self.model(feats)

    def adapt_state_dict(self, name, state_dict):
        """An ImageNet cache evaluated on ImageNet-A/R keeps their classifier rows and value columns.

        The cache holds the keys of the training run's few-shot set, whatever this dataset's is.
        """
        keys = state_dict.get("cache_keys")
        if keys is not None and keys.shape[0] != self.model.cache_keys.shape[0]:
            self.model.resize_cache(keys.shape[0])
        return select_classes(self, state_dict, {"classifier": 0, "cache_values": 1})

    def fill_cache(self):
        """Cache keys from AUGMENT_EPOCH training views of the few-shot set; values one-hot."""
        tcfg = self.trainer_cfg()
        train_x = self.dm.dataset.train_x
        views = split_features(self, train_x, "train", is_train=True, views=range(tcfg.AUGMENT_EPOCH))
        keys, values = build_cache(views, [d.label for d in train_x], self.num_classes)
        self.model.set_cache(keys.to(self.device), values.to(self.device))
        logger.info("Cache model: %d keys from %d augmented view(s)", keys.shape[0], views.shape[0])

    def search(self):
        """Set the head's (alpha, beta) to the best on val (SEARCH_HP), else keep the INIT values."""
        tcfg = self.trainer_cfg()
        if not tcfg.SEARCH_HP:
            return
        ds = self.dm.dataset
        if not ds.val:
            raise ConfigError(f"{self.cfg.TRAINER.NAME} searches alpha and beta on a val split, but {self.cfg.DATASET.NAME} "
                              "has none; set TRAINER.TIP_ADAPTER.SEARCH_HP False to keep INIT_ALPHA and INIT_BETA.")
        head = self.model
        feats = split_features(self, ds.val, "val", is_train=False).to(self.device, head.classifier.dtype)
        feats = feats / feats.norm(dim=-1, keepdim=True)
        labels = torch.tensor([d.label for d in ds.val], device=self.device)
        with torch.no_grad():
            beta, alpha, acc = search_hp(feats, labels, head.cache_keys.detach(), head.cache_values, head.classifier,
                                         head.logit_scale, tcfg.SEARCH_SCALE, tcfg.SEARCH_STEP)
        logger.info("After searching, the best val accuracy: %.2f (beta %.4g, alpha %.4g)", acc, beta, alpha)
        head.set_hp(alpha, beta)


@TRAINER_REGISTRY.register()
class TipAdapter(_TipAdapterParts, FitOnceTrainer):
    """Training-free: fill the cache, search (beta, alpha) on val, save ``tip_adapter``, test."""

    protocol = _protocol("Tip-Adapter", 70)

    def build_model(self):
        self.load_clip_and_head()
        self.register_model("tip_adapter", self.model, None, None)
        self.use_feature_cache()

    def fit(self):
        self.fill_cache()
        self.search()


@TRAINER_REGISTRY.register()
class TipAdapterF(_TipAdapterParts, FrozenCLIPTrainer):
    """Cache keys fine-tuned at the initial (alpha, beta), then (beta, alpha) searched on val.

    Epoch loop of TrainerX (resume, checkpoints); the cache is filled before the first epoch
    (a resumed run loads the trained keys instead) and the search runs after the last one.
    """

    protocol = _protocol("Tip-Adapter-F", 80)

    learnable_keys = True

    def build_model(self):
        tcfg = self.trainer_cfg()
        self.load_clip_and_head()
        self.optim = torch.optim.AdamW([self.model.cache_keys], lr=tcfg.LR, eps=tcfg.EPS)
        # the original anneals per iteration over all of training: T_max = epochs * batches
        total = max(self.max_epoch * len(self.train_loader_x), 1)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.optim, total)
        self.register_model("tip_adapter", self.model, self.optim, self.sched)
        self.use_feature_cache()

    def before_train(self):
        super().before_train()
        if self.start_epoch == 0:
            self.fill_cache()

    def update_lr(self, names=None):
        """The scheduler steps per iteration in forward_backward, not per epoch."""

    def forward_backward(self, batch):
        inputs, label = self.parse_batch_train(batch)
        output = self.model_inference(inputs)  # images (end-to-end mode) or cached features
        loss = F.cross_entropy(output.float(), label)
        self.model_backward_and_update(loss)
        self.sched.step()
        return {"loss": loss.item(), "acc": compute_accuracy(output, label)[0].item()}

    def after_train(self):
        self.search()
        self.save_model(self.max_epoch - 1, self.output_dir)  # the searched (alpha, beta) travel with the keys
        super().after_train()
