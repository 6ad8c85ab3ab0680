"""Result aggregation: parse_test_res.py (CoOp-compatible) and scripts/summarize.py on fake
output trees whose log.txt files hold the evaluator's lines (no training needed)."""
import csv
import importlib.util
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import parse_test_res  # noqa: E402

_spec = importlib.util.spec_from_file_location("summarize", os.path.join(ROOT, "scripts", "summarize.py"))
summarize = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(summarize)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BENCHMARK = summarize.BENCHMARK


def train_log(acc, val_acc=11.0):
    """A training log: a validation result during training, then the final test result."""
    return (f"epoch [1/2] batch [1/1] time 0.1 loss 1.0 acc 50.0 lr 1e-05\n"
            f"Evaluate on the *val* set\n=> result\n* total: 10\n* accuracy: {val_acc}%\n"
            f"Finish training\nEvaluate on the *test* set\n=> result\n* total: 100\n* correct: 60\n"
            f"* accuracy: {acc}%\n* error: {100 - acc:.1f}%\n* macro_f1: {acc - 1:.1f}%\n"
            f"Elapsed: 0:00:03\n")


def eval_log(acc):
    return f"Loading weights\nEvaluate on the *test* set\n=> result\n* total: 100\n* accuracy: {acc}%\n* error: {100 - acc:.1f}%\n"


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def run_name(dataset, shots, base, tag="rn50"):
    cfg = summarize.standard_cfg(dataset, shots)
    return f"{cfg}_{tag}_{base}-base_alpha{summarize.standard_alpha(dataset)}_{shots}shots"


def fake_run(root, dataset, shots, base, accs, tag="rn50"):
    for seed, acc in enumerate(accs, start=1):
        write(os.path.join(root, dataset, "TaskRes", run_name(dataset, shots, base, tag), f"seed{seed}",
                           "log.txt"), train_log(acc))


# ---------------------------------------------------------------- parse_test_res.py


def run_parser(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "parse_test_res.py"), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_parse_takes_last_result_after_end_signal_and_prints_coop_format(tmp_path):
    for seed, acc in ((1, 60.0), (2, 70.0), (3, 65.0)):
        write(str(tmp_path / f"seed{seed}" / "log.txt"), train_log(acc))
    proc = run_parser(str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"Parsing files in {tmp_path}"
    assert lines[1] == f"file: {tmp_path}/seed1/log.txt. accuracy: 60.00%. error: 40.00%. macro_f1: 59.00%."
    std = math.sqrt(((60 - 65) ** 2 + (70 - 65) ** 2 + 0) / 3)  # population std, as numpy/CoOp
    assert lines[4:] == ["===", f"Summary of directory: {tmp_path}",
                         f"* accuracy: 65.00% +- {std:.2f}%", f"* error: 35.00% +- {std:.2f}%",
                         f"* macro_f1: 64.00% +- {std:.2f}%", "==="]
    assert "11.00" not in proc.stdout  # the validation result during training is never taken


def test_parse_ci95(tmp_path):
    for seed, acc in ((1, 60.0), (2, 70.0)):
        write(str(tmp_path / f"seed{seed}" / "log.txt"), train_log(acc))
    proc = run_parser(str(tmp_path), "--ci95")
    assert f"* accuracy: 65.00% +- {1.96 * 5.0 / math.sqrt(2):.2f}%" in proc.stdout


def test_parse_takes_the_last_of_several_results(tmp_path):
    write(str(tmp_path / "seed1" / "log.txt"), train_log(50.0) + "=> result\n* accuracy: 52.5%\n")
    assert parse_test_res.read_run(str(tmp_path / "seed1"))[1]["accuracy"] == 52.5


def test_parse_test_log_needs_flag_and_unfinished_seed_is_skipped(tmp_path):
    write(str(tmp_path / "seed1" / "log.txt"), eval_log(40.0))
    write(str(tmp_path / "seed2" / "log.txt"), eval_log(50.0))
    write(str(tmp_path / "seed3" / "log.txt"), "epoch [1/2] batch [1/1]\n")  # still training
    proc = run_parser(str(tmp_path))
    assert proc.returncode == 1
    assert "Nothing found in" in proc.stderr and "--test-log" in proc.stderr
    proc = run_parser(str(tmp_path), "--test-log")
    assert proc.returncode == 0, proc.stderr
    assert "* accuracy: 45.00% +- 5.00%" in proc.stdout
    assert "seed3" not in proc.stdout


def test_parse_prefers_newest_log_of_a_resumed_run(tmp_path):
    run = tmp_path / "seed1"
    write(str(run / "log.txt"), "epoch [1/200] batch [1/1]\n")  # first attempt, interrupted
    write(str(run / "log.txt-2026-01-02-10-00-00"), train_log(61.0))
    write(str(run / "log.txt-2026-01-01-10-00-00"), train_log(33.0))
    path, result = parse_test_res.read_run(str(run))
    assert path.endswith("log.txt-2026-01-02-10-00-00") and result["accuracy"] == 61.0


def config_yaml(dataset, shots=16, base="none", seed=1):
    return (f"DATASET:\n  NAME: {dataset}\n  NUM_SHOTS: {shots}\n  ROOT: /data\nOUTPUT_DIR: out/{dataset}\n"
            f"SEED: {seed}\nTRAINER:\n  NAME: TaskRes\n  TaskRes:\n    ENHANCED_BASE: {base}\n"
            "    RESIDUAL_SCALE: 0.5\n")


def test_parse_multi_exp(tmp_path):
    """Experiments of one setting (here: two datasets) are averaged, as CoOp's parser does."""
    for exp, accs in (("exp-1", (60.0, 62.0)), ("exp-2", (70.0, 72.0))):
        for seed, acc in enumerate(accs, start=1):
            write(str(tmp_path / exp / f"seed{seed}" / "log.txt"), train_log(acc))
            write(str(tmp_path / exp / f"seed{seed}" / "config.yaml"), config_yaml(exp, seed=seed))
    proc = run_parser(str(tmp_path), "--multi-exp")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-4:] == [
        "Average performance", "* accuracy: 66.00%", "* error: 34.00%", "* macro_f1: 65.00%"]


def test_parse_multi_exp_never_averages_different_settings(tmp_path):
    """Regular and enhanced bases, 1 and 2 shots: four settings, four averages, no single number."""
    runs = {"regular_1shots": (1, "none", 50.0), "regular_2shots": (2, "none", 60.0),
            "enhanced_1shots": (1, "strong_base/OxfordPets/rn50_1shots/model.pth.tar", 70.0),
            "enhanced_2shots": (2, "strong_base/OxfordPets/rn50_2shots/model.pth.tar", 80.0)}
    for exp, (shots, base, acc) in runs.items():
        for seed in (1, 2):
            write(str(tmp_path / exp / f"seed{seed}" / "log.txt"), train_log(acc + seed))
            write(str(tmp_path / exp / f"seed{seed}" / "config.yaml"), config_yaml("OxfordPets", shots, base, seed))
    write(str(tmp_path / "coop_run" / "seed1" / "log.txt"), train_log(10.0))  # no config.yaml: its own setting
    proc = run_parser(str(tmp_path), "--multi-exp")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "5 different settings among the experiments: each is averaged on its own, never together" in out
    for exp, (_, _, acc) in sorted(runs.items()):
        assert f"Average performance of {exp}\n* accuracy: {acc + 1.5:.2f}%" in out
    assert "Average performance of coop_run\n* accuracy: 10.00%" in out
    assert "\nAverage performance\n" not in out


def test_parse_missing_directory_says_so(tmp_path):
    proc = run_parser(str(tmp_path / "nope"))
    assert proc.returncode == 1 and "is not a folder" in proc.stderr


# ---------------------------------------------------------------- scripts/summarize.py


@pytest.fixture
def full_tree(tmp_path):
    """All 11 datasets: zero-shot, regular at 1 and 16 shots, enhanced at 16 only; DG partly."""
    root = tmp_path / "output"
    for i, dataset in enumerate(BENCHMARK):
        write(str(root / dataset / "ZeroshotCLIP" / "rn50" / "log.txt"), eval_log(40.0 + i))
        fake_run(str(root), dataset, 1, "regular", (50.0 + i, 52.0 + i, 54.0 + i))
        fake_run(str(root), dataset, 16, "regular", (60.0 + i, 62.0 + i, 64.0 + i))
        fake_run(str(root), dataset, 16, "enhanced", (70.0 + i, 72.0 + i))
    for j, target in enumerate(summarize.DG_TARGETS):
        for seed in (1, 2, 3):
            write(str(root / "dg" / target / "TaskRes" / run_name("imagenet", 16, "regular") / f"seed{seed}"
                      / "log.txt"), eval_log(30.0 + j))
    return root


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_summary_tables(full_tree, tmp_path):
    out = tmp_path / "summary"
    summarize.summarize(str(full_tree), str(out))
    rows = read_csv(out / "summary.csv")
    assert rows[0] == ["dataset", "method", "zero-shot", "1-shot", "16-shot", "git_commit", "weights_sha256",
                       "torch", "device"]
    by_key = {(r[0], r[1]): r[2:5] for r in rows[1:]}
    assert {tuple(r[5:]) for r in rows[1:]} == {("", "", "", "")}  # runs of an older version: no provenance
    # imagenet is BENCHMARK[0]: regular 16-shot seeds 60, 62, 64
    assert by_key[("imagenet", "TaskRes (regular base)")] == [
        "-", "52.00 ± 1.63 (n=3)", "62.00 ± 1.63 (n=3)"]
    assert by_key[("imagenet", "TaskRes (enhanced base)")] == ["-", "-", "71.00 ± 1.00 (n=2)"]
    assert by_key[("imagenet", "ZeroshotCLIP")] == ["40.00 ± 0.00 (n=1)", "-", "-"]
    # Average over the 11 datasets: mean of 62 + i for i in 0..10 = 67
    assert by_key[("Average", "TaskRes (regular base)")] == ["-", "57.00 (11 datasets)", "67.00 (11 datasets)"]
    assert by_key[("Average", "TaskRes (enhanced base)")] == ["-", "-", "76.00 (11 datasets)"]
    assert by_key[("Average", "ZeroshotCLIP")] == ["45.00 (11 datasets)", "-", "-"]
    datasets = [r[0] for r in rows[1:]]
    assert datasets.index("Average") > datasets.index("ucf101")

    md = (out / "summary.md").read_text()
    assert "## imagenet" in md and "## Average over the 11 datasets" in md
    assert "| TaskRes (regular base) | - | 52.00 ± 1.63 (n=3) | 62.00 ± 1.63 (n=3) |" in md

    runs = read_csv(out / "runs.csv")
    assert len(runs) == 1 + 11 * 4 + 4  # header, 11 x (zs + 3 runs), 4 DG runs


def test_dg_table(full_tree, tmp_path):
    out = tmp_path / "summary"
    summarize.summarize(str(full_tree), str(out))
    rows = read_csv(out / "dg.csv")
    assert rows[0] == ["method", "shots", "imagenet (source)", "imagenetv2", "imagenet_sketch", "imagenet_a",
                       "imagenet_r"]
    by_method = {r[0]: r[2:] for r in rows[1:]}
    assert {r[0]: r[1] for r in rows[1:]} == {"TaskRes (regular base)": "16", "TaskRes (enhanced base)": "16",
                                              "ZeroshotCLIP": "zero-shot"}
    assert by_method["TaskRes (regular base)"] == [
        "62.00 ± 1.63 (n=3)", "30.00 ± 0.00 (n=3)", "31.00 ± 0.00 (n=3)", "32.00 ± 0.00 (n=3)", "33.00 ± 0.00 (n=3)"]
    # enhanced: source trained, never evaluated on the targets
    assert by_method["TaskRes (enhanced base)"] == ["71.00 ± 1.00 (n=2)", "-", "-", "-", "-"]
    assert by_method["ZeroshotCLIP"] == ["40.00 ± 0.00 (n=1)", "-", "-", "-", "-"]
    assert "| TaskRes (regular base) | 16 | 62.00" in (out / "dg.md").read_text()
    assert "16-shot ImageNet" not in (out / "dg.md").read_text()  # the shots column says it, per row


def test_plots_are_valid_pngs(full_tree, tmp_path):
    out = tmp_path / "summary"
    written = summarize.summarize(str(full_tree), str(out))
    pngs = sorted(p for p in written if p.endswith(".png"))
    assert sorted(os.path.basename(p) for p in pngs) == sorted([f"{d}.png" for d in BENCHMARK] + ["average.png", "comparison.png"])
    for path in pngs:
        with open(path, "rb") as f:
            data = f.read()
        assert data[:8] == PNG_MAGIC and len(data) > 1000, path


def test_partial_results(tmp_path):
    """Two datasets, one unfinished seed, no DG: '-' cells, no Average row, plots still written."""
    root = tmp_path / "output"
    fake_run(str(root), "oxford_pets", 1, "regular", (80.0, 82.0))
    write(str(root / "oxford_pets" / "TaskRes" / run_name("oxford_pets", 1, "regular") / "seed3" / "log.txt"),
          "epoch [1/100] batch [1/1]\n")
    fake_run(str(root), "eurosat", 16, "enhanced", (90.0,))
    summarize.summarize(str(root))
    rows = [r[:-len(summarize.PROVENANCE)] for r in read_csv(root / "summary.csv")]
    assert rows[0] == ["dataset", "method", "1-shot", "16-shot"]
    assert ["oxford_pets", "TaskRes (regular base)", "81.00 ± 1.00 (n=2)", "-"] in rows
    assert ["eurosat", "TaskRes (enhanced base)", "-", "90.00 ± 0.00 (n=1)"] in rows
    assert not any(r[0] == "Average" for r in rows)
    dg = read_csv(root / "dg.csv")
    assert all(cell == "-" for row in dg[1:] for cell in row[1:])
    for name in ("oxford_pets.png", "eurosat.png", "average.png"):
        assert (root / name).read_bytes()[:8] == PNG_MAGIC


def test_regular_and_enhanced_and_flowers_alpha_are_told_apart(tmp_path):
    root = tmp_path / "output"
    fake_run(str(root), "oxford_flowers", 4, "regular", (70.0,))
    fake_run(str(root), "oxford_flowers", 4, "enhanced", (75.0,))
    runs = summarize.collect(str(root))
    assert {(r.method, r.alpha, r.cfg) for r in runs} == {
        ("TaskRes", "1.0", "adam_lr2e-3_B256_ep100"), ("TaskRes-enhanced", "1.0", "adam_lr2e-3_B256_ep100")}


def test_standard_run_wins_a_cell_with_several_runs(tmp_path):
    root = tmp_path / "output"
    fake_run(str(root), "dtd", 16, "regular", (60.0,))
    other = root / "dtd" / "TaskRes" / "adam_lr2e-4_B256_ep200_rn50_regular-base_alpha0.7_16shots" / "seed1"
    write(str(other / "log.txt"), train_log(10.0))
    table = summarize.Table(summarize.collect(str(root)))
    assert table.stats("dtd", "TaskRes", "rn50", 16)[0] == 60.0


def test_several_backbones_get_their_own_rows(tmp_path):
    root = tmp_path / "output"
    fake_run(str(root), "dtd", 16, "regular", (60.0,))
    fake_run(str(root), "dtd", 16, "regular", (66.0,), tag="vitb16")
    summarize.summarize(str(root))
    methods = [r[1] for r in read_csv(root / "summary.csv")[1:]]
    assert methods == ["TaskRes (regular base) [rn50]", "TaskRes (regular base) [vitb16]"]
    summarize.summarize(str(root), str(tmp_path / "only"), backbone="vitb16")
    assert read_csv(tmp_path / "only" / "summary.csv")[1][:3] == ["dtd", "TaskRes (regular base)", "66.00 ± 0.00 (n=1)"]


def test_cli_errors_and_output(tmp_path, full_tree):
    script = os.path.join(ROOT, "scripts", "summarize.py")
    proc = subprocess.run([sys.executable, script, str(tmp_path / "missing")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1 and "does not exist" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = subprocess.run([sys.executable, script, str(tmp_path / "empty")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1 and "no run folders" in proc.stderr
    proc = subprocess.run([sys.executable, script, str(full_tree), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert str(tmp_path / "o" / "summary.md") in proc.stdout.splitlines()


def test_non_benchmark_dataset_gets_its_table_and_an_average_plot(tmp_path):
    root = tmp_path / "output"
    fake_run(str(root), "fashion_mnist", 4, "regular", (70.0, 72.0))
    write(str(root / "fashion_mnist" / "ZeroshotCLIP" / "rn50-untrained" / "log.txt"), eval_log(10.0))
    written = summarize.summarize(str(root))
    rows = [r[:-len(summarize.PROVENANCE)] for r in read_csv(root / "summary.csv")]
    assert ["fashion_mnist", "TaskRes (regular base) [rn50]", "-", "71.00 ± 1.00 (n=2)"] in rows
    assert ["fashion_mnist", "ZeroshotCLIP [rn50-untrained]", "10.00 ± 0.00 (n=1)", "-"] in rows
    assert not any(r[0] == "Average" for r in rows)  # the Average row is the 11-dataset benchmark's
    assert str(root / "average.png") in written and (root / "average.png").read_bytes()[:8] == PNG_MAGIC
