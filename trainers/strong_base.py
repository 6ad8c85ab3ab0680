"""`StrongBase`: produce an enhanced base by tuning only CLIP's text projection.

The paper's enhanced base comes from CLIP whose text projection layer was tuned on the target
task's few-shot data (50 epochs) before the residual is tuned; the original ships these files
as downloads only. This trainer makes them: the pre-projection text features of the class
prompts are computed once, image features come from the feature cache, and a bias-free
``nn.Linear(width, embed_dim)`` initialised with CLIP's projection is trained with
cross-entropy. After training it writes, in the original's format and place,

    <STRONG_BASE.ROOT>/<DatasetClass>/<backbone_tag>_<K>shots/model.pth.tar
    = {"state_dict": {"weight": [embed_dim, width]}, "epoch", "optimizer", "scheduler", "val_result"}

which ``--enhanced-base`` loads (transposed into CLIP's ``text_projection``). The file also records
the CLIP weights it was made from (``"clip_weights"``: the feature cache's file identity and the
file's sha256); TaskRes refuses a base made from other weights (``check_made_from``), so a base
file that outlived a change of weights is never reused. Downloaded bases have no record: warned.

Multitask enhanced base (ours, beyond the original; issue 11): with ``--dataset A,B,C
--dataset-coop --multi-task`` the projection is tuned jointly on the source datasets (MVLPT's
data path: each task its own classes and templates, a sample's loss over its own task's classes,
per-task evaluation) and written to ``<STRONG_BASE.ROOT>/<A,B,C>/<backbone_tag>_<K>shots/model.pth.tar``,
to be used as the base of TaskRes on a target whose classes were not among the sources.
"""
import logging
import os

import clip
import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from engine import TRAINER_REGISTRY
from engine.errors import CheckpointError
from engine.data.multitask import MultiTaskClassification, own_task_logits, use_multitask_data, wants_multitask_data
from engine.metrics import compute_accuracy
from engine.protocol import Protocol
from engine.utils.checkpoint import save_checkpoint
from engine.utils.integrity import file_sha256

from .clip_trainer import FrozenCLIPTrainer, backbone_tag, cosine_logits, weights_identity
from .templates import base_templates
from .text_features import prompt_features

logger = logging.getLogger(__name__)


def extend_cfg(cfg):
    cfg.TRAINER.StrongBase = CN()
    cfg.TRAINER.StrongBase.PREC = "fp16"  # of the frozen encoder (shares its feature cache); the projection trains in fp32
    cfg.STRONG_BASE = CN()
    cfg.STRONG_BASE.ROOT = "strong_base"  # where enhanced bases are written and looked up


WEIGHTS_RECORD = "clip_weights"  # key of the enhanced-base dict naming the weights it was made from


def strong_base_path(root, dataset_name, backbone, num_shots):
    return os.path.join(root, dataset_name, f"{backbone_tag(backbone)}_{num_shots}shots", "model.pth.tar")


def _weights_file(cfg):
    bb = cfg.MODEL.BACKBONE
    return clip.local_weights_path(bb.NAME, bb.CACHE_DIR or None, bb.WEIGHTS or None) if bb.PRETRAINED else None


def weights_record(cfg):
    """What identifies the CLIP weights of this run: the feature cache's identity (path, size, mtime,
    or the tag of weights without a local file) and the file's sha256 (None without a file)."""
    path = _weights_file(cfg)
    return {"identity": weights_identity(cfg), "sha256": file_sha256(path) if path else None}


def check_made_from(base, path, cfg):
    """Refuse an enhanced base made from other CLIP weights than this run's; warn when it has no record."""
    made_from = base.get(WEIGHTS_RECORD) if isinstance(base, dict) else None
    identity = weights_identity(cfg)
    if not isinstance(made_from, dict):
        logger.warning("Enhanced base %s does not record the CLIP weights it was made from (a downloaded original?); "
                       "it is used as it is: make sure it was made from %s", path, identity)
        return
    if made_from.get("identity") == identity:
        return
    weights = _weights_file(cfg)
    sha = file_sha256(weights) if weights else None
    if sha is not None and made_from.get("sha256") == sha:  # the same file, moved or copied
        logger.info("Enhanced base %s was made from the same weights (sha256 %s) at %s", path, sha[:12],
                    made_from.get("identity"))
        return
    theirs = made_from.get("identity")
    if made_from.get("sha256"):
        theirs += f", sha256 {made_from['sha256'][:12]}"
    ours = identity + (f", sha256 {sha[:12]}" if sha else "")
    raise CheckpointError(
        f"Enhanced base {path} was made from the CLIP weights {theirs}, but this run uses {ours}; delete it and "
        "rebuild it with scripts/taskres/strong_base.sh for these weights (or pass --enhanced-base none).")


class ProjectionClassifier(nn.Module):
    """Classifier = mean over templates of (pre-projection text features) @ W^T, W tuned."""

    def __init__(self, pre_projection, text_projection, logit_scale):
        super().__init__()
        self.register_buffer("pre_projection", pre_projection)  # [T, K, width]
        width, embed_dim = text_projection.shape
        self.proj = nn.Linear(width, embed_dim, bias=False)
        with torch.no_grad():
            self.proj.weight.copy_(text_projection.t())
        self.register_buffer("logit_scale", logit_scale.detach().clone())

    def forward(self, image_features):
        return cosine_logits(image_features.float(), self.proj(self.pre_projection).mean(dim=0), self.logit_scale)


def multitask_pre_projection(clip_model, dataset):
    """[1, K, width]: every task's classes with that task's templates, averaged over templates
    (the projection is linear and bias-free, so projecting the mean is the mean of projections)."""
    parts = []
    for name, (start, end) in zip(dataset.task_names, dataset.task_ranges):
        pre = prompt_features(clip_model, dataset.classnames[start:end], base_templates(name), projection=False)
        parts.append(pre.float().mean(dim=0))
    return torch.cat(parts).unsqueeze(0)


@TRAINER_REGISTRY.register()
class StrongBase(FrozenCLIPTrainer):
    """Tunes CLIP's text projection on the few-shot set; writes the enhanced-base file."""

    # A producer, not a method of the comparison: TaskRes-enhanced needs its file of (dataset, shots,
    # backbone), <root>/<DatasetClass>/<backbone tag>_<K>shots/model.pth.tar, made with seed 1.
    protocol = Protocol(label="StrongBase", config="adam_lr2e-4_ep50", default_grid=False,
                        extra={"writes": "{root}/{dataset_class}/{tag}_{shots}shots/model.pth.tar",
                               "folder": "{tag}_{shots}shots", "seeds": (1,)})

    training_free = False

    def __init__(self, cfg):
        super().__init__(cfg)
        if self.multi_task:  # per-task accuracy on each task's own classes, and their average
            ds = self.dm.dataset
            self.evaluator = MultiTaskClassification(cfg, ds.task_names, ds.task_ranges, lab2cname=self.lab2cname,
                                                     evalkey=cfg.DATASET.MULTITASK_EVALKEY)

    def build_data_loader(self):
        self.multi_task = bool(self.cfg.DATASET.MULTITASK)
        if not wants_multitask_data(self.cfg):
            super().build_data_loader()
            return
        use_multitask_data(self)

    def base_name(self):
        """The folder under STRONG_BASE.ROOT: the dataset class, or the joined source datasets."""
        if wants_multitask_data(self.cfg):
            return ",".join(self.dm.dataset.task_names)
        return self.cfg.DATASET.NAME

    def build_head(self, clip_model):
        if wants_multitask_data(self.cfg):  # each task's classes with that task's templates
            pre = multitask_pre_projection(clip_model, self.dm.dataset)
        else:
            classnames = self.dm.dataset.classnames
            templates = base_templates(self.cfg.DATASET.NAME)
            pre = prompt_features(clip_model, classnames, templates, projection=False).float()
        return ProjectionClassifier(pre, clip_model.text_projection.detach().float(), clip_model.logit_scale)

    def trainable_modules(self):
        return {"text_projection": self.model.proj}

    def forward_backward(self, batch):
        inputs, label = self.parse_batch_train(batch)
        feats = self.image_features(inputs)
        output = self.model(feats.float())
        if self.multi_task and self.cfg.DATASET.MULTITASK_LABEL_PERTASK:  # a sample's own task's classes
            ds = self.dm.dataset
            output = own_task_logits(output, label, ds.label_to_task, ds.task_ranges)
        loss = F.cross_entropy(output, label)
        self.model_backward_and_update(loss)
        if (self.batch_idx + 1) == self.num_batches:  # Dassl's convention: one LR step per epoch
            self.update_lr()
        return {"loss": loss.item(), "acc": compute_accuracy(output, label)[0].item()}

    def after_train(self):
        path = strong_base_path(self.cfg.STRONG_BASE.ROOT, self.base_name(), self.cfg.MODEL.BACKBONE.NAME,
                                self.cfg.DATASET.NUM_SHOTS)
        state = {"state_dict": self.model.proj.state_dict(), "epoch": self.max_epoch,
                 "optimizer": self.optim.state_dict(), "scheduler": self.sched.state_dict(), "val_result": None,
                 WEIGHTS_RECORD: weights_record(self.cfg)}
        save_checkpoint(state, os.path.dirname(path), model_name=os.path.basename(path), update_pointer=False)
        logger.info("Enhanced base written to %s", path)
        super().after_train()
