"""Evaluators (Dassl's ``EVALUATOR_REGISTRY`` / ``build_evaluator`` / ``Classification``).

``Classification`` logs Dassl's result block, which users and result parsers read from
``log.txt``::

    => result
    * total: 1,000
    * correct: 873
    * accuracy: 87.3%
    * error: 12.7%
    * macro_f1: 86.9%

Macro F1 and the confusion matrix are computed with numpy (same values as scikit-learn's
``f1_score(average="macro", labels=unique(y_true))`` and ``confusion_matrix(normalize="true")``).

Call order::

    evaluator = build_evaluator(cfg, lab2cname=dm.lab2cname)
    evaluator.reset()
    for batch in loader:
        evaluator.process(model(batch["img"]), batch["label"])
    results = evaluator.evaluate(save_path=os.path.join(cfg.OUTPUT_DIR, "results_test.json"))
"""
import json
import logging
import os
from collections import OrderedDict, defaultdict

import numpy as np
import torch

from .errors import ConfigError, DataError
from .registry import Registry
from .utils.io import atomic_torch_save, atomic_write_text, mkdir_if_missing

logger = logging.getLogger(__name__)

EVALUATOR_REGISTRY = Registry("EVALUATOR")


def build_evaluator(cfg, **kwargs):
    """The evaluator named by ``cfg.TEST.EVALUATOR``, built with ``(cfg, **kwargs)``."""
    name = cfg.TEST.EVALUATOR
    if name not in EVALUATOR_REGISTRY:
        raise ConfigError(f"TEST.EVALUATOR: {EVALUATOR_REGISTRY.unknown_name_message(name)}")
    return EVALUATOR_REGISTRY.get(name)(cfg, **kwargs)


class EvaluatorBase:
    """Interface: ``reset()``, then ``process(output, target)`` per batch, then ``evaluate()``."""

    def __init__(self, cfg):
        self.cfg = cfg

    def reset(self):
        raise NotImplementedError

    def process(self, mo, gt):
        raise NotImplementedError

    def evaluate(self, save_path=None):
        raise NotImplementedError


def macro_f1_score(y_true, y_pred):
    """Mean F1 over the labels present in ``y_true``, in [0, 1] (an absent prediction scores 0)."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    scores = []
    for label in np.unique(y_true):
        tp = np.sum((y_true == label) & (y_pred == label))
        fp = np.sum((y_true != label) & (y_pred == label))
        fn = np.sum((y_true == label) & (y_pred != label))
        # 2tp / (2tp + fp + fn) is the harmonic mean of precision and recall; the label occurs
        # in y_true, so the denominator is never 0
        scores.append(2.0 * tp / (2.0 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def confusion_matrix(y_true, y_pred, normalize=True):
    """Rows: true label, columns: predicted label, over the sorted labels seen in either.

    With ``normalize`` each row is divided by its total (rows with no samples stay 0).
    Returns ``(matrix, labels)``.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    labels = np.union1d(y_true, y_pred)
    index = {int(label): i for i, label in enumerate(labels)}
    cmat = np.zeros((len(labels), len(labels)), dtype=np.float64)
    np.add.at(cmat, ([index[int(t)] for t in y_true], [index[int(p)] for p in y_pred]), 1)
    if normalize:
        totals = cmat.sum(axis=1, keepdims=True)
        cmat = np.divide(cmat, totals, out=np.zeros_like(cmat), where=totals > 0)
    return cmat, labels


@EVALUATOR_REGISTRY.register()
class Classification(EvaluatorBase):
    """Accuracy, error and macro F1; per-class accuracy (TEST.PER_CLASS_RESULT) and the
    row-normalised confusion matrix saved as OUTPUT_DIR/cmat.pt (TEST.COMPUTE_CMAT)."""

    def __init__(self, cfg, lab2cname=None, **kwargs):
        super().__init__(cfg)
        self._lab2cname = lab2cname or {}
        self._per_class = bool(cfg.TEST.PER_CLASS_RESULT)
        self.reset()

    def reset(self):
        self._correct = 0
        self._total = 0
        self._y_true = []
        self._y_pred = []
        self._per_class_res = defaultdict(list) if self._per_class else None

    def process(self, mo, gt):
        """Add one batch: ``mo`` the model output ``[batch, num_classes]``, ``gt`` the labels ``[batch]``."""
        pred = mo.max(1)[1]
        matches = pred.eq(gt)
        self._correct += int(matches.sum().item())
        self._total += gt.shape[0]
        gt_list = gt.detach().cpu().tolist()
        self._y_true.extend(gt_list)
        self._y_pred.extend(pred.detach().cpu().tolist())
        if self._per_class_res is not None:
            for label, hit in zip(gt_list, matches.detach().cpu().tolist()):
                self._per_class_res[label].append(int(hit))

    def evaluate(self, save_path=None):
        """Log the result block and return ``OrderedDict(accuracy, error_rate, macro_f1[, perclass_accuracy])``.

        The first value is the one a trainer reports (Dassl's convention). With ``save_path``
        the results, counts and per-class numbers are also written there as json.
        """
        if self._total == 0:
            raise DataError("The evaluator received no samples: the evaluated split is empty; check the dataset's test/val split.")
        acc = 100.0 * self._correct / self._total
        err = 100.0 - acc
        macro_f1 = 100.0 * macro_f1_score(self._y_true, self._y_pred)

        results = OrderedDict()
        results["accuracy"] = acc
        results["error_rate"] = err
        results["macro_f1"] = macro_f1

        logger.info("=> result")
        logger.info(f"* total: {self._total:,}")
        logger.info(f"* correct: {self._correct:,}")
        logger.info(f"* accuracy: {acc:.1f}%")
        logger.info(f"* error: {err:.1f}%")
        logger.info(f"* macro_f1: {macro_f1:.1f}%")

        per_class = []
        if self._per_class_res is not None:
            logger.info("=> per-class result")
            for label in sorted(self._per_class_res):
                hits = self._per_class_res[label]
                classname = self._lab2cname.get(label, str(label))
                correct, total = sum(hits), len(hits)
                class_acc = 100.0 * correct / total
                per_class.append(
                    {"label": label, "classname": classname, "total": total, "correct": correct, "accuracy": class_acc}
                )
                logger.info(
                    f"* class: {label} ({classname})\ttotal: {total:,}\tcorrect: {correct:,}\tacc: {class_acc:.1f}%"
                )
            mean_acc = float(np.mean([c["accuracy"] for c in per_class]))
            logger.info(f"* average: {mean_acc:.1f}%")
            results["perclass_accuracy"] = mean_acc

        if self.cfg.TEST.COMPUTE_CMAT:
            cmat, _ = confusion_matrix(self._y_true, self._y_pred, normalize=True)
            mkdir_if_missing(self.cfg.OUTPUT_DIR)
            cmat_path = os.path.join(self.cfg.OUTPUT_DIR, "cmat.pt")
            # a tensor, not Dassl's numpy array: torch.load's default weights_only mode reads it
            atomic_torch_save(torch.from_numpy(cmat), cmat_path)
            logger.info(f'Confusion matrix is saved to "{cmat_path}"')

        if save_path:
            payload = dict(results)
            payload.update(total=self._total, correct=self._correct)
            if per_class:
                payload["per_class"] = per_class
            folder = os.path.dirname(save_path)
            if folder:
                mkdir_if_missing(folder)
            atomic_write_text(save_path, json.dumps(payload, indent=2) + "\n")
        return results
