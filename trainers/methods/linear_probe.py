"""CoOp's linear-probe protocol (``lpclip/linear_probe.py``), as functions.

Facts of the original kept here:
- scikit-learn ``LogisticRegression(solver="lbfgs", max_iter=1000)`` with an L2 penalty on the
  raw (not normalised) frozen image features, extracted with the *test* transform;
- the inverse regularisation C is chosen on the few-shot val split: first the coarse list
  1e6, 1e4, 1e2, 1, 1e-2, 1e-4, 1e-6 (the first best wins), then ``num_step`` (8) steps of a
  binary search in log10 space between peak/10 and peak*10. Each step fits both ends, keeps the
  better one (the left one on a tie) and halves the interval towards it. The C returned is the
  one kept at the *last* step (not the best seen over all steps): that is what the original
  reports;
- the few-shot val holds ``min(K, 4)`` images per class (its ``val_shot_list``).
"""
import logging
import math

import numpy as np

logger = logging.getLogger(__name__)

COARSE_C = (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6)
NUM_STEP = 8
MAX_ITER = 1000
VAL_SHOTS = {1: 1, 2: 2, 4: 4, 8: 4, 16: 4}  # lpclip's val_shot_list; min(K, 4) in general


def fit_logistic(features, labels, c, max_iter=MAX_ITER):
    """One L2 logistic regression (lbfgs); scikit-learn >= 1.8 spells L2 as ``l1_ratio=0``, its default."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(solver="lbfgs", max_iter=max_iter, C=c).fit(features, labels)


def accuracy(clf, features, labels):
    """The original's ``sum(pred == label) / len(label)``."""
    return float(np.sum(clf.predict(features) == labels)) / len(labels)


def search_c(score, num_step=NUM_STEP, coarse=COARSE_C):
    """The C the original picks, given ``score(c) -> val accuracy``; returns (c, trace).

    ``trace`` lists (c, val accuracy) in the order evaluated, for the log. The interval
    arithmetic goes through log10 and back exactly as the original's, so the C is bit-equal.
    """
    trace = []

    def evaluate(c):
        acc = score(c)
        trace.append((c, acc))
        return acc

    coarse_acc = [evaluate(c) for c in coarse]
    peak = coarse[int(np.argmax(coarse_acc))]  # np.argmax: the first of equal maxima
    c_left, c_right = 1e-1 * peak, 1e1 * peak
    c_final = None
    for _ in range(num_step):
        acc_left, acc_right = evaluate(c_left), evaluate(c_right)
        mid = 0.5 * (np.log10(c_right) + np.log10(c_left))
        if acc_left < acc_right:
            c_final = c_right
            c_left, c_right = np.power(10, mid), np.power(10, np.log10(c_right))
        else:
            c_final = c_left
            c_left, c_right = np.power(10, np.log10(c_left)), np.power(10, mid)
    return (float(c_final) if c_final is not None else float(peak)), trace


def fewshot_val_indices(labels, per_class, seed):
    """Indices keeping at most ``per_class`` val items per class (seeded), in label order.

    The datasets already give CoOp's few-shot val (min(K, 4) per class); ImageNet's val is its
    full test set, which lpclip too would subsample before searching C.
    """
    labels = np.asarray(labels)
    rng = np.random.RandomState(seed)
    keep = []
    for label in np.unique(labels):
        idx = np.where(labels == label)[0]
        keep.extend(idx if len(idx) <= per_class else rng.choice(idx, size=per_class, replace=False))
    return np.sort(np.asarray(keep, dtype=np.int64))


def linear_weights(clf, num_classes):
    """(weight [num_classes, D], bias [num_classes]) reproducing ``clf.decision_function`` as logits.

    Binary problems: scikit-learn keeps one row w (positive class); logits [0, w.x + b] rank the
    classes the same way. Classes absent from the training labels get a bias of -inf.
    """
    coef = np.asarray(clf.coef_, dtype=np.float64)
    intercept = np.asarray(clf.intercept_, dtype=np.float64)
    classes = np.asarray(clf.classes_)
    if len(classes) == 2 and coef.shape[0] == 1:
        coef = np.concatenate([np.zeros_like(coef), coef])
        intercept = np.concatenate([np.zeros(1), intercept])
    weight = np.zeros((num_classes, coef.shape[1]))
    bias = np.full(num_classes, -math.inf)
    weight[classes] = coef
    bias[classes] = intercept
    return weight, bias
