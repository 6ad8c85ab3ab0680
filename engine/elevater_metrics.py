"""ELEVATER's per-task metrics, as MVLPT scores its ELEVATER tasks (``vision_benchmark``'s ``get_metric``).

Each metric takes the targets and the model's scores of one task and returns a fraction in [0, 1]
(ELEVATER reports fractions, Dassl's block percentages):

    accuracy        top-1: argmax of the scores equals the label
    mean-per-class  balanced accuracy: the mean over the classes present of their top-1 recall
    11point_mAP     per class, the precision interpolated at recall 1.0, 0.9, ..., 0.0 (the best
                    precision at a recall at least that high), averaged over the 11 points, then
                    over the classes present (multi-label: VOC 2007)
    roc_auc         scikit-learn's ``roc_auc_score`` on the one-hot targets (macro over classes)

Targets: class indices ``[N]`` or 0/1 rows ``[N, C]`` (multi-label). As ELEVATER does, a class
that has no positive target is left out of the class means, its score column with it (so the
argmax of mean-per-class runs over the classes present). ``ELEVATER_METRICS`` is MVLPT's table
(``class_map_metric``): which metric each ELEVATER dataset is scored with.
"""
import numpy as np
from sklearn.metrics import balanced_accuracy_score, precision_recall_curve, roc_auc_score

from .errors import DataError

# MVLPT's class_map_metric for the 20 ELEVATER datasets (it scores hateful-memes by accuracy,
# where ELEVATER's own toolkit uses ROC-AUC; the run follows MVLPT)
ELEVATER_METRICS = {
    "caltech-101": "mean-per-class", "cifar-10": "accuracy", "cifar-100": "accuracy", "country211": "accuracy",
    "dtd": "accuracy", "eurosat_clip": "accuracy", "fer-2013": "accuracy",
    "fgvc-aircraft-2013b-variants102": "mean-per-class", "food-101": "accuracy", "gtsrb": "accuracy",
    "hateful-memes": "accuracy", "kitti-distance": "accuracy", "mnist": "accuracy",
    "oxford-flower-102": "mean-per-class", "oxford-iiit-pets": "mean-per-class", "patch-camelyon": "accuracy",
    "rendered-sst2": "accuracy", "resisc45_clip": "accuracy", "stanford-cars": "accuracy",
    "voc-2007-classification": "11point_mAP",
}


def one_hot(targets, num_classes):
    """Class indices ``[N]`` -> 0/1 rows ``[N, C]``; rows already ``[N, C]`` are returned as they are."""
    targets = np.asarray(targets)
    if targets.ndim == 2:
        return targets.astype(np.int64)
    out = np.zeros((len(targets), num_classes), dtype=np.int64)
    out[np.arange(len(targets)), targets.astype(np.int64)] = 1
    return out


def _present(targets, scores):
    """The targets' and scores' columns of the classes with at least one positive target."""
    scores = np.asarray(scores, dtype=np.float64)
    rows = one_hot(targets, scores.shape[1])
    keep = rows.any(axis=0)
    if not keep.any():
        raise DataError("ELEVATER metric: the evaluated split has no positive target; check its labels.")
    return rows[:, keep], scores[:, keep]


def accuracy(targets, scores):
    scores = np.asarray(scores)
    labels = np.asarray(targets)
    labels = labels.argmax(axis=1) if labels.ndim == 2 else labels
    return float(np.mean(scores.argmax(axis=1) == labels))


def mean_per_class(targets, scores):
    rows, scores = _present(targets, scores)
    return float(balanced_accuracy_score(rows.argmax(axis=1), scores.argmax(axis=1)))


def interpolated_precision(positive, score, n_points=11):
    """The precision at recall 1, ..., 0 (``n_points`` evenly spaced): the best at a recall >= each."""
    precision, recall, _ = precision_recall_curve(positive, score)
    thresholds = np.linspace(1, 0, n_points)
    return np.array([precision[recall >= t].max() for t in thresholds])


def map_11_points(targets, scores):
    rows, scores = _present(targets, scores)
    return float(np.mean([interpolated_precision(rows[:, c], scores[:, c]).mean() for c in range(rows.shape[1])]))


def roc_auc(targets, scores):
    scores = np.asarray(scores, dtype=np.float64)
    rows = one_hot(targets, scores.shape[1])
    counts = rows.sum(axis=0)
    if ((counts == 0) | (counts == len(rows))).any():  # scikit-learn: a warning and nan; ELEVATER: an error
        raise DataError("ELEVATER metric roc_auc cannot be computed on this split: a class has only positive "
                        "or only negative targets, so it has no ROC curve.")
    return float(roc_auc_score(rows, scores))


METRICS = {"accuracy": accuracy, "mean-per-class": mean_per_class, "11point_mAP": map_11_points, "roc_auc": roc_auc}


def elevater_metric(dataset):
    """``(name, function)`` of the metric MVLPT scores the ELEVATER ``dataset`` with."""
    name = ELEVATER_METRICS[dataset]
    return name, METRICS[name]
