"""ELEVATER's per-task metrics (engine/elevater_metrics.py) on cases computed by hand."""
import numpy as np
import pytest

from datasets.elevater import ELEVATER_DATASETS
from engine.elevater_metrics import (
    ELEVATER_METRICS, accuracy, elevater_metric, interpolated_precision, map_11_points, mean_per_class, roc_auc)
from engine.errors import DataError


def scores_for(predicted, num_classes=3):
    """Score rows whose argmax is ``predicted``."""
    out = np.zeros((len(predicted), num_classes))
    out[np.arange(len(predicted)), predicted] = 1.0
    return out


def test_accuracy_is_top1_as_a_fraction():
    labels = np.array([0, 1, 2, 1])
    scores = scores_for([0, 2, 2, 1])
    assert accuracy(labels, scores) == 0.75
    assert accuracy(np.eye(3, dtype=int)[labels], scores) == 0.75  # one-hot targets, as ELEVATER's


def test_mean_per_class_averages_each_present_class_recall():
    # class 0: 2 of 3 right, class 1: 1 of 1 -> (2/3 + 1) / 2; accuracy would be 3/4
    assert mean_per_class(np.array([0, 0, 0, 1]), scores_for([0, 0, 1, 1], 2)) == pytest.approx(5 / 6)


def test_mean_per_class_drops_the_column_of_a_class_without_targets():
    # the last sample scores class 2 highest, but no target is class 2: ELEVATER drops its column first
    scores = np.array([[0.9, 0.1, 0.0], [0.1, 0.3, 0.9]])
    assert mean_per_class(np.array([0, 1]), scores) == 1.0
    assert accuracy(np.array([0, 1]), scores) == 0.5


def test_11_point_interpolated_precision_by_hand():
    # ranked: +, -, +, -  -> (recall, precision) (0.5, 1), (0.5, 0.5), (1, 2/3), (1, 0.5)
    positive, score = np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.6])
    # recall >= 1.0 ... 0.6 (5 points): best 2/3; recall >= 0.5 ... 0.0 (6 points): 1
    np.testing.assert_allclose(interpolated_precision(positive, score), [2 / 3] * 5 + [1.0] * 6)
    targets = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 1, 0]])  # multi-label; class 2 has none
    scores = np.stack([score, [0.1, 0.9, 0.8, 0.7], [0.5, 0.5, 0.5, 0.5]], axis=1)
    assert map_11_points(targets, scores) == pytest.approx((28 / 33 + 1.0) / 2)


def test_roc_auc_by_hand():
    # positives score 0.9, 0.4; negatives 0.2, 0.6: 3 of the 4 pairs ranked right, in both columns
    p1 = np.array([0.2, 0.9, 0.4, 0.6])
    assert roc_auc(np.array([0, 1, 1, 0]), np.stack([1 - p1, p1], axis=1)) == pytest.approx(0.75)
    with pytest.raises(DataError, match="roc_auc cannot be computed"):
        roc_auc(np.array([1, 1]), np.array([[0.2, 0.8], [0.1, 0.9]]))


def test_every_elevater_dataset_has_mvlpts_metric():
    assert set(ELEVATER_METRICS) == set(ELEVATER_DATASETS)
    assert elevater_metric("voc-2007-classification")[0] == "11point_mAP"
    assert {name for name, m in ELEVATER_METRICS.items() if m == "mean-per-class"} == {
        "caltech-101", "fgvc-aircraft-2013b-variants102", "oxford-flower-102", "oxford-iiit-pets"}
