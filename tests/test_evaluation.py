"""engine.evaluation and engine.metrics: Dassl's result lines, numbers and files."""
import json
import logging
import os

import numpy as np
import pytest
import torch

from engine.config import get_cfg_default
from engine.errors import ConfigError, DataError
from engine.evaluation import (
    EVALUATOR_REGISTRY,
    Classification,
    build_evaluator,
    confusion_matrix,
    macro_f1_score,
)
from engine.metrics import compute_accuracy
from engine.utils.logger import close_logger, setup_logger

# 3 classes, 8 samples; predictions chosen by hand
Y_TRUE = [0, 0, 0, 1, 1, 1, 2, 2]
Y_PRED = [0, 0, 1, 1, 1, 2, 2, 0]
LAB2CNAME = {0: "cat", 1: "dog", 2: "frog"}


def logits_for(preds, num_classes=3):
    out = torch.zeros(len(preds), num_classes)
    out[torch.arange(len(preds)), torch.tensor(preds)] = 1.0
    return out


def make_cfg(tmp_path, per_class=False, cmat=False):
    cfg = get_cfg_default()
    cfg.OUTPUT_DIR = str(tmp_path / "out")
    cfg.TEST.PER_CLASS_RESULT = per_class
    cfg.TEST.COMPUTE_CMAT = cmat
    return cfg


def run_eval(evaluator, save_path=None):
    evaluator.reset()
    # two batches, as a test loader gives them
    evaluator.process(logits_for(Y_PRED[:5]), torch.tensor(Y_TRUE[:5]))
    evaluator.process(logits_for(Y_PRED[5:]), torch.tensor(Y_TRUE[5:]))
    return evaluator.evaluate(save_path=save_path)


@pytest.fixture(autouse=True)
def _close_logger():
    yield
    close_logger()


def expected_macro_f1():
    # per class: tp, fp, fn -> F1 = 2tp / (2tp + fp + fn)
    f1 = [2 * 2 / (2 * 2 + 1 + 1), 2 * 2 / (2 * 2 + 1 + 1), 2 * 1 / (2 * 1 + 1 + 1)]
    return 100.0 * sum(f1) / 3


def test_results_and_log_lines(tmp_path, caplog):
    evaluator = build_evaluator(make_cfg(tmp_path), lab2cname=LAB2CNAME)
    assert isinstance(evaluator, Classification)
    with caplog.at_level(logging.INFO, logger="engine.evaluation"):
        results = run_eval(evaluator)
    assert list(results) == ["accuracy", "error_rate", "macro_f1"]
    assert results["accuracy"] == pytest.approx(500 / 8)
    assert results["error_rate"] == pytest.approx(100 - 500 / 8)
    assert results["macro_f1"] == pytest.approx(expected_macro_f1())
    lines = [r.getMessage() for r in caplog.records if r.name == "engine.evaluation"]
    assert lines == [
        "=> result",
        "* total: 8",
        "* correct: 5",
        "* accuracy: 62.5%",
        "* error: 37.5%",
        f"* macro_f1: {expected_macro_f1():.1f}%",
    ]


def test_lines_reach_log_txt_and_json_is_written(tmp_path):
    cfg = make_cfg(tmp_path, per_class=True)
    log_path = setup_logger(cfg.OUTPUT_DIR)
    save_path = os.path.join(cfg.OUTPUT_DIR, "results_test.json")
    results = run_eval(build_evaluator(cfg, lab2cname=LAB2CNAME), save_path=save_path)
    close_logger()
    text = open(log_path).read().splitlines()
    block = text[text.index("=> result"):]
    assert block[:6] == [
        "=> result",
        "* total: 8",
        "* correct: 5",
        "* accuracy: 62.5%",
        "* error: 37.5%",
        f"* macro_f1: {expected_macro_f1():.1f}%",
    ]
    assert block[6:] == [
        "=> per-class result",
        "* class: 0 (cat)\ttotal: 3\tcorrect: 2\tacc: 66.7%",
        "* class: 1 (dog)\ttotal: 3\tcorrect: 2\tacc: 66.7%",
        "* class: 2 (frog)\ttotal: 2\tcorrect: 1\tacc: 50.0%",
        "* average: 61.1%",
    ]
    assert results["perclass_accuracy"] == pytest.approx((200 / 3 + 200 / 3 + 50) / 3)
    saved = json.load(open(save_path))
    assert saved["accuracy"] == pytest.approx(62.5)
    assert (saved["total"], saved["correct"]) == (8, 5)
    assert [c["classname"] for c in saved["per_class"]] == ["cat", "dog", "frog"]


def test_thousands_separator(caplog):
    cfg = get_cfg_default()
    evaluator = Classification(cfg)
    evaluator.process(logits_for([0] * 1234, 2), torch.zeros(1234, dtype=torch.long))
    with caplog.at_level(logging.INFO, logger="engine.evaluation"):
        evaluator.evaluate()
    assert "* total: 1,234" in caplog.messages and "* correct: 1,234" in caplog.messages


def test_reset_clears_previous_batches(tmp_path):
    evaluator = build_evaluator(make_cfg(tmp_path))
    evaluator.process(logits_for([0, 0]), torch.tensor([1, 1]))
    results = run_eval(evaluator)  # resets first
    assert results["accuracy"] == pytest.approx(62.5)


def test_confusion_matrix_saved(tmp_path, caplog):
    cfg = make_cfg(tmp_path, cmat=True)
    with caplog.at_level(logging.INFO, logger="engine.evaluation"):
        run_eval(build_evaluator(cfg))
    path = os.path.join(cfg.OUTPUT_DIR, "cmat.pt")
    assert f'Confusion matrix is saved to "{path}"' in caplog.messages
    cmat = torch.load(path)  # default weights_only loading works: it is a tensor
    expected = np.array([[2 / 3, 1 / 3, 0], [0, 2 / 3, 1 / 3], [1 / 2, 0, 1 / 2]])
    np.testing.assert_allclose(cmat.numpy(), expected)


def test_confusion_matrix_labels_union_and_empty_rows():
    cmat, labels = confusion_matrix([0, 0], [0, 2], normalize=True)
    assert labels.tolist() == [0, 2]
    np.testing.assert_allclose(cmat, [[0.5, 0.5], [0.0, 0.0]])
    counts, _ = confusion_matrix([0, 1, 1], [1, 1, 1], normalize=False)
    np.testing.assert_array_equal(counts, [[0, 1], [0, 2]])


def test_macro_f1_ignores_labels_only_predicted():
    # label 5 never occurs in y_true: like sklearn with labels=unique(y_true) it is not averaged
    assert macro_f1_score([0, 1], [0, 5]) == pytest.approx((1.0 + 0.0) / 2)
    assert macro_f1_score([1, 1, 1], [1, 1, 1]) == 1.0


def test_unknown_evaluator_and_empty_split(tmp_path):
    cfg = make_cfg(tmp_path)
    cfg.TEST.EVALUATOR = "Classificaton"
    with pytest.raises(ConfigError, match='TEST.EVALUATOR.*Did you mean "Classification"'):
        build_evaluator(cfg)
    assert "Classification" in EVALUATOR_REGISTRY
    with pytest.raises(DataError, match="no samples"):
        Classification(make_cfg(tmp_path)).evaluate()


def test_compute_accuracy_topk():
    output = torch.tensor([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1], [0.2, 0.3, 0.5], [0.5, 0.4, 0.1]])
    target = torch.tensor([1, 1, 0, 2])
    top1, top2 = compute_accuracy(output, target, topk=(1, 2))
    assert top1.shape == (1,) and top1.item() == pytest.approx(25.0)
    assert top2.item() == pytest.approx(50.0)
    assert compute_accuracy((output, None), target)[0].item() == pytest.approx(25.0)
