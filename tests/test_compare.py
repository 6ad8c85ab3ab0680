"""The comparison: compare.sh's command lines (--dry-run) and run loop, and scripts/summarize.py
on fake run folders of every method in compare.sh's layout (figure, DG and base-to-new tables)."""
import csv
import importlib.util
import os
import subprocess
import sys

import pytest

from test_results import PNG_MAGIC, eval_log, train_log, write
from test_scripts import Cmd, planned

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("summarize_cmp", os.path.join(ROOT, "scripts", "summarize.py"))
summarize = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(summarize)

ALL_METHODS = ["ZeroshotCLIP", "ZeroshotCLIP2", "LinearProbe", "CoOp", "CoCoOp", "CLIP_Adapter",
               "TipAdapter", "TipAdapterF", "TaskRes", "TaskRes-enhanced"]
COOP_VARIANT = "nctx16_cscFalse_ctpend"


def compare(*args, env=None):
    full_env = {k: v for k, v in os.environ.items() if k not in ("DATA", "OUTPUT", "STRONG_BASE", "PYTHON")}
    full_env.update({"DATA": "/datasets", "TR_RUNNER_PYTHON": sys.executable, **(env or {})})
    return subprocess.run(["bash", os.path.join(ROOT, "compare.sh"), *args], capture_output=True, text=True,
                          env=full_env, cwd=ROOT, timeout=120)


def dry(*args, env=None):
    return [Cmd(line) for line in planned("compare.sh", *args, env={"DATA": "/datasets", "PYTHON": "false",
                                                                     **(env or {})})]


# ---------------------------------------------------------------- compare.sh


def test_dry_run_covers_methods_datasets_shots_seeds_with_per_shot_rules(tmp_path):
    cmds = dry("--datasets", "eurosat dtd", "--shots", "1 2 4 8 16", "--seeds", "1 2 3",
               "--output", str(tmp_path), "--protocols", "fewshot")
    by_trainer = {}
    for cmd in cmds:
        by_trainer.setdefault(cmd["--trainer"], []).append(cmd)
    # zero-shot: once per dataset, no seed, no shots
    for zs in ("ZeroshotCLIP", "ZeroshotCLIP2"):
        assert len(by_trainer[zs]) == 2 and all(c["--eval-only"] is True for c in by_trainer[zs])
        assert all("--seed" not in c.flags and "DATASET.NUM_SHOTS" not in c.opts for c in by_trainer[zs])
    # trained methods: 2 datasets x 5 shots x 3 seeds
    for method in ("LinearProbe", "CoOp", "CoCoOp", "CLIP_Adapter", "TipAdapter", "TipAdapterF"):
        got = {(c["--dataset-config-file"], c.opts["DATASET.NUM_SHOTS"], c["--seed"]) for c in by_trainer[method]}
        assert len(got) == 2 * 5 * 3, method
    # TaskRes: regular + enhanced (with its StrongBase producer per dataset and shot count)
    assert len(by_trainer["TaskRes"]) == 2 * 2 * 5 * 3 and len(by_trainer["StrongBase"]) == 2 * 5
    # CoOp: rn50_ep50 for 1 shot, rn50_ep100 for 2 and 4, rn50 (200 epochs) for 8 and 16
    coop_cfg = {c.opts["DATASET.NUM_SHOTS"]: os.path.basename(c["--config-file"]) for c in by_trainer["CoOp"]}
    assert coop_cfg == {"1": "rn50_ep50.yaml", "2": "rn50_ep100.yaml", "4": "rn50_ep100.yaml",
                        "8": "rn50.yaml", "16": "rn50.yaml"}
    for cmd in by_trainer["CoOp"]:
        assert cmd.opts["TRAINER.COOP.N_CTX"] == "16" and cmd.opts["TRAINER.COOP.CSC"] == "False"
        assert cmd.opts["TRAINER.COOP.CLASS_TOKEN_POSITION"] == "end"
        assert os.path.isfile(os.path.join(ROOT, cmd["--config-file"]))
    # TaskRes: the original rule (ep100 up to 4 shots), same folders as train_regular.sh
    cfgs = {c.opts["DATASET.NUM_SHOTS"]: os.path.basename(c["--config-file"]) for c in by_trainer["TaskRes"]}
    assert cfgs["1"] == "adam_lr2e-3_B256_ep100.yaml" and cfgs["16"] == "adam_lr2e-3_B256_ep200.yaml"
    assert {os.path.basename(c["--config-file"]) for c in by_trainer["CoCoOp"]} == {
        "vit_b16_c4_ep10_batch1_ctxv1.yaml"}


def test_output_folders_never_collide_and_name_method_shots_seed(tmp_path):
    cmds = dry("--datasets", "eurosat imagenet", "--shots", "1 16", "--seeds", "1 2",
               "--output", str(tmp_path), "--protocols", "fewshot dg base2new")
    dirs = [c["--output-dir"] for c in cmds]
    assert len(dirs) == len(set(dirs))
    coop = [c for c in cmds if c["--trainer"] == "CoOp" and "--eval-only" not in c.flags
            and "base2new" not in c["--output-dir"]]
    assert str(tmp_path / "eurosat" / "CoOp" / f"rn50_ep50_rn50_{COOP_VARIANT}_1shots" / "seed2") in \
        [c["--output-dir"] for c in coop]
    for cmd in cmds:
        if cmd["--trainer"] in ("ZeroshotCLIP", "ZeroshotCLIP2", "StrongBase"):
            continue
        out = cmd["--output-dir"]
        assert f"/{cmd['--trainer']}/" in out and out.endswith("/seed" + cmd["--seed"]), out
        if "--eval-only" not in cmd.flags:
            assert f"_{cmd.opts['DATASET.NUM_SHOTS']}shots/" in out, out


def test_dg_and_base2new_protocols(tmp_path):
    cmds = dry("--datasets", "imagenet", "--shots", "16", "--seeds", "1", "--output", str(tmp_path),
               "--methods", "CoOp CoCoOp ZeroshotCLIP2 TaskRes", "--protocols", "dg base2new")
    targets = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")
    coop_dg = [c for c in cmds if c["--trainer"] == "CoOp" and "/dg/" in c["--output-dir"]]
    name = f"rn50_ep50_rn50_{COOP_VARIANT}_16shots"  # CoOp's ImageNet runs: 50 epochs at every shot count
    assert sorted(c["--output-dir"] for c in coop_dg) == sorted(
        str(tmp_path / "dg" / t / "CoOp" / name / "seed1") for t in targets)
    assert all(c["--model-dir"] == str(tmp_path / "imagenet" / "CoOp" / name / "seed1") and
               c["--load-epoch"] == "50" for c in coop_dg)
    zs2 = [c["--output-dir"] for c in cmds if c["--trainer"] == "ZeroshotCLIP2"]
    assert sorted(zs2) == sorted(str(tmp_path / t / "ZeroshotCLIP2" / "rn50") for t in targets)
    taskres = [c for c in cmds if c["--trainer"] == "TaskRes"]
    assert len(taskres) == 4 and all(os.path.basename(c["--config-file"]) == "generalization_rn50.yaml"
                                     for c in taskres)
    b2n = [c for c in cmds if c["--trainer"] == "CoCoOp" and "/base2new/" in c["--output-dir"]]
    train, test = b2n
    assert train.opts["DATASET.SUBSAMPLE_CLASSES"] == "base" and "--eval-only" not in train.flags
    assert test.opts["DATASET.SUBSAMPLE_CLASSES"] == "new" and test["--load-epoch"] == "10"
    assert test["--model-dir"] == train["--output-dir"]
    assert "/base2new/test_new/imagenet/CoCoOp/" in test["--output-dir"]


@pytest.mark.parametrize("args, message", [
    (["--methods", "CoOP"], "--methods: 'CoOP' is not valid"),
    (["--protocols", "fewshots"], "--protocols: 'fewshots' is not valid"),
    (["--datasets", "eurosat", "--", "TRAINER.COOP.N_CTX", "4"], "TRAINER.COOP.N_CTX after --"),
    (["--methods"], "option '--methods' needs a value"),
    (["--bogus", "1"], "unknown option '--bogus'"),
])
def test_bad_arguments_are_one_sentence(args, message):
    proc = compare("--dry-run", *args, env={"PYTHON": "false"})
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def fake_python(tmp_path):
    """A python that records its command line and writes results_test.json into --output-dir,
    except for seed 2, which fails."""
    script = tmp_path / "fakepy"
    script.write_text('#!/usr/bin/env bash\necho "$*" >> "%s"\nout=""; seed=""\n'
                      'while (($#)); do case "$1" in --output-dir) out=$2;; --seed) seed=$2;; esac; shift; done\n'
                      '[[ "$seed" == 2 ]] && exit 3\nmkdir -p "$out" && echo {} > "$out/results_test.json"\n'
                      % (tmp_path / "calls.txt"))
    script.chmod(0o755)
    return script


def test_runs_skip_finished_and_go_on_after_a_failure(tmp_path):
    py = fake_python(tmp_path)
    out = tmp_path / "out"
    args = ["--methods", "CoOp ZeroshotCLIP", "--datasets", "eurosat", "--shots", "1", "--seeds", "1 2",
            "--output", str(out)]
    proc = compare(*args, env={"PYTHON": str(py)})
    assert proc.returncode == 1 and "1 run(s) failed" in proc.stderr and "CoOp eurosat 1-shot seed2" in proc.stderr
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert len(calls) == 3  # CoOp seeds 1 and 2, ZeroshotCLIP once
    assert (out / "eurosat" / "CoOp" / f"rn50_ep50_rn50_{COOP_VARIANT}_1shots" / "seed1" / "results_test.json").exists()
    proc = compare(*args, env={"PYTHON": str(py)})
    calls = (tmp_path / "calls.txt").read_text().splitlines()[3:]
    assert len(calls) == 1 and "--seed 2" in calls[0]  # the finished ones are skipped, the failed one retried
    assert "skip (finished)" in proc.stderr
    # a method without a config for the dataset fails with a message and runs nothing
    proc = compare("--methods", "TipAdapter", "--datasets", "fashion_mnist", "--shots", "1", "--seeds", "1",
                   "--output", str(out), env={"PYTHON": str(py)})
    assert proc.returncode == 1
    assert "config configs/trainers/TipAdapter/rn50_fashion_mnist.yaml does not exist in this checkout" in proc.stderr
    assert len((tmp_path / "calls.txt").read_text().splitlines()) == 4


def test_parallel_options_are_accepted_and_dry_run_prints_the_same_runs(tmp_path):
    args = ("--datasets", "imagenet", "--shots", "16", "--seeds", "1 2", "--output", str(tmp_path),
            "--protocols", "fewshot dg base2new")
    plain = [c.argv for c in dry(*args)]
    assert plain and plain == [c.argv for c in dry(*args, "--jobs", "4", "--gpus", "0,1", "--submit", "slurm")]
    proc = compare("--dry-run", "--jobs", "0", env={"PYTHON": "false"})
    assert proc.returncode == 2 and "--jobs '0' is not a positive whole number" in proc.stderr


def test_jobs_evaluate_only_after_their_training_finished(tmp_path):
    """With --jobs the DG evaluations wait for the ImageNet runs they load (a barrier between)."""
    import sys
    py = fake_python(tmp_path)
    out = tmp_path / "out"
    proc = compare("--methods", "CoOp", "--datasets", "imagenet", "--shots", "16", "--seeds", "1",
                   "--output", str(out), "--jobs", "2",
                   env={"PYTHON": str(py), "TR_RUNNER_PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert len(calls) == 5 and "--eval-only" not in calls[0] and all("--eval-only" in c for c in calls[1:])
    name = f"rn50_ep50_rn50_{COOP_VARIANT}_16shots"
    assert all((out / "dg" / t / "CoOp" / name / "seed1" / "results_test.json").exists()
               for t in ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"))


def test_extra_opts_reach_every_run(tmp_path):
    cmds = dry("--methods", "CoOp LinearProbe", "--datasets", "eurosat", "--shots", "2", "--seeds", "1",
               "--output", str(tmp_path), "--", "OPTIM.MAX_EPOCH", "2")
    assert len(cmds) == 2 and all(c.opts["OPTIM.MAX_EPOCH"] == "2" for c in cmds)


# ---------------------------------------------------------------- summarize.py on every method

SHOTS = (1, 2, 4, 8, 16)
# Fake accuracies: method offset + 3 * log2(shots) + dataset offset + seed noise.
OFFSETS = {"LinearProbe": 20.0, "CoOp": 45.0, "CoCoOp": 47.0, "CLIP_Adapter": 48.0, "TipAdapter": 50.0,
           "TipAdapterF": 51.0}
DATASETS = ("eurosat", "dtd", "imagenet")


def method_run_name(method, shots, dataset="eurosat"):
    cfg = summarize.standard_cfg(dataset, shots, method, "rn50")
    variant = f"_{COOP_VARIANT}" if method == "CoOp" else ""
    return f"{cfg}_rn50{variant}_{shots}shots"


def taskres_name(dataset, shots, base):
    cfg = summarize.standard_cfg(dataset, shots)
    return f"{cfg}_rn50_{base}-base_alpha{summarize.standard_alpha(dataset)}_{shots}shots"


def acc(offset, dataset, shots, seed):
    return offset + 3 * shots.bit_length() + 2 * DATASETS.index(dataset) + (seed - 2)


@pytest.fixture
def every_method_tree(tmp_path):
    root = tmp_path / "output"
    for dataset in DATASETS:
        write(str(root / dataset / "ZeroshotCLIP" / "rn50" / "log.txt"), eval_log(50.0))
        write(str(root / dataset / "ZeroshotCLIP2" / "rn50" / "log.txt"), eval_log(52.0))
        for shots in SHOTS:
            for seed in (1, 2, 3):
                for method, offset in OFFSETS.items():
                    write(str(root / dataset / method / method_run_name(method, shots, dataset) / f"seed{seed}" / "log.txt"),
                          train_log(acc(offset, dataset, shots, seed)))
                for base, offset in (("regular", 53.0), ("enhanced", 56.0)):
                    write(str(root / dataset / "TaskRes" / taskres_name(dataset, shots, base) / f"seed{seed}"
                              / "log.txt"), train_log(acc(offset, dataset, shots, seed)))
    for j, target in enumerate(summarize.DG_TARGETS):
        write(str(root / target / "ZeroshotCLIP2" / "rn50" / "log.txt"), eval_log(30.0 + j))
        for seed in (1, 2):
            write(str(root / "dg" / target / "CoOp" / method_run_name("CoOp", 16, "imagenet") / f"seed{seed}" / "log.txt"),
                  eval_log(35.0 + j + seed))
            write(str(root / "dg" / target / "TaskRes" / taskres_name("imagenet", 16, "regular") / f"seed{seed}"
                      / "log.txt"), eval_log(37.0 + j))
    for dataset, (base, new) in {"eurosat": (80.0, 60.0), "dtd": (70.0, 50.0)}.items():
        name = method_run_name("CoCoOp", 16)
        for seed in (1, 2, 3):
            write(str(root / "base2new" / "train_base" / dataset / "CoCoOp" / name / f"seed{seed}" / "log.txt"),
                  train_log(base + seed - 2))
            write(str(root / "base2new" / "test_new" / dataset / "CoCoOp" / name / f"seed{seed}" / "log.txt"),
                  eval_log(new))
    # an unfinished CoOp seed is left out, a stray folder is ignored
    write(str(root / "eurosat" / "CoOp" / method_run_name("CoOp", 16) / "seed4" / "log.txt"), "epoch [1/200]\n")
    (root / "eurosat" / "CoOp" / "notes").mkdir()
    return root


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_summary_has_every_method_in_the_paper_order(every_method_tree, tmp_path):
    out = tmp_path / "s"
    written = summarize.summarize(str(every_method_tree), str(out))
    rows = read_csv(out / "summary.csv")
    assert rows[0] == ["dataset", "method", "zero-shot", "1-shot", "2-shot", "4-shot", "8-shot", "16-shot",
                       *summarize.PROVENANCE]
    rows = [r[:-len(summarize.PROVENANCE)] for r in rows]
    methods = [r[1] for r in rows[1:] if r[0] == "eurosat"]
    assert methods == ["ZeroshotCLIP", "ZeroshotCLIP2 (ensemble)", "Linear probe", "CoOp", "CoCoOp",
                       "CLIP-Adapter", "Tip-Adapter", "Tip-Adapter-F", "TaskRes (regular base)",
                       "TaskRes (enhanced base)"]
    by_key = {(r[0], r[1]): r[2:] for r in rows[1:]}
    # CoOp eurosat 16 shots: 45 + 3 * 5 + 0 + (-1, 0, 1): 60 ± 0.82 over 3 seeds (seed4 unfinished)
    assert by_key[("eurosat", "CoOp")][-1] == "60.00 ± 0.82 (n=3)"
    assert by_key[("dtd", "Tip-Adapter-F")][1] == f"{51.0 + 3 + 2:.2f} ± 0.82 (n=3)"
    for name in ("comparison.png", "average.png", "eurosat.png"):
        assert str(out / name) in written and (out / name).read_bytes()[:8] == PNG_MAGIC


def test_average_band_is_the_std_of_per_seed_averages(every_method_tree):
    table = summarize.Table(summarize.collect(str(every_method_tree)))
    series, partial = summarize._average_series(table, DATASETS)
    coop = dict(series)["CoOp"]
    # per seed s: mean over datasets of 45 + 3*2 + {0, 2, 4} + (s - 2) = 53 + (s - 2)
    point = [p for p in coop if p[0] == 2][0]
    assert point[1] == pytest.approx(53.0) and point[2] == pytest.approx((2 / 3) ** 0.5)
    assert not partial


def test_dg_table_has_every_method(every_method_tree, tmp_path):
    summarize.summarize(str(every_method_tree), str(tmp_path / "s"))
    rows = read_csv(tmp_path / "s" / "dg.csv")
    by_method = {r[0]: r[2:] for r in rows[1:]}
    assert {r[1] for r in rows[1:] if "Zeroshot" not in r[0]} == {"16"}  # the source runs' shots
    assert list(by_method) == ["ZeroshotCLIP", "ZeroshotCLIP2 (ensemble)", "Linear probe", "CoOp", "CoCoOp",
                               "CLIP-Adapter", "Tip-Adapter", "Tip-Adapter-F", "TaskRes (regular base)",
                               "TaskRes (enhanced base)"]
    # CoOp: its ImageNet 16-shot source run (45 + 15 + 4 = 64 ± 0.82) and the evaluated targets
    assert by_method["CoOp"] == ["64.00 ± 0.82 (n=3)", "36.50 ± 0.50 (n=2)", "37.50 ± 0.50 (n=2)",
                                 "38.50 ± 0.50 (n=2)", "39.50 ± 0.50 (n=2)"]
    assert by_method["ZeroshotCLIP2 (ensemble)"][1:] == [f"{30.0 + j:.2f} ± 0.00 (n=1)" for j in range(4)]
    assert by_method["Tip-Adapter"][1:] == ["-"] * 4  # trained on ImageNet, never evaluated on the targets
    assert by_method["TaskRes (regular base)"][1] == "37.00 ± 0.00 (n=2)"


def test_base2new_table_with_harmonic_mean(every_method_tree, tmp_path):
    written = summarize.summarize(str(every_method_tree), str(tmp_path / "s"))
    assert str(tmp_path / "s" / "base2new.md") in written
    rows = read_csv(tmp_path / "s" / "base2new.csv")
    assert rows[0] == ["dataset", "method", "base", "new", "H"]
    assert ["eurosat", "CoCoOp", "80.00 ± 0.82 (n=3)", "60.00 ± 0.00 (n=3)", f"{2 * 80 * 60 / 140:.2f}"] in rows
    # average over the two datasets: base 75, new 55
    assert rows[-1] == ["Average (2 datasets)", "CoCoOp", "75.00", "55.00", f"{2 * 75 * 55 / 130:.2f}"]


def test_no_base2new_runs_no_base2new_table(tmp_path):
    root = tmp_path / "o"
    write(str(root / "eurosat" / "CoOp" / method_run_name("CoOp", 4) / "seed1" / "log.txt"), train_log(50.0))
    written = summarize.summarize(str(root))
    assert not any(os.path.basename(p).startswith("base2new") for p in written)
    assert ["eurosat", "CoOp", "50.00 ± 0.00 (n=1)"] in [r[:3] for r in read_csv(root / "summary.csv")]


def test_per_shot_rules_of_the_methods_helpers_table(tmp_path):
    """compare.sh's configs = the methods' declared protocols (CoOp's epochs, ImageNet 50; Tip per dataset)."""
    cmds = dry("--methods", "CoOp CLIP_Adapter TipAdapterF ZeroshotCLIP2", "--datasets", "imagenet oxford_pets",
               "--shots", "1 2 16", "--seeds", "1", "--output", str(tmp_path), "--protocols", "fewshot")
    got = {(c["--trainer"], os.path.basename(c["--dataset-config-file"]), c.opts.get("DATASET.NUM_SHOTS")):
           os.path.relpath(c["--config-file"], ROOT) if os.path.isabs(c["--config-file"]) else c["--config-file"]
           for c in cmds}
    for (trainer, dataset, shots), cfg in got.items():
        stem = dataset[:-len(".yaml")]
        if trainer == "CoOp" or trainer == "CLIP_Adapter":
            epochs = 50 if stem == "imagenet" else {"1": 50, "2": 100, "16": 200}[shots]
            assert cfg == f"configs/trainers/{trainer}/rn50{'' if epochs == 200 else f'_ep{epochs}'}.yaml"
        elif trainer == "TipAdapterF":
            assert cfg == f"configs/trainers/TipAdapterF/rn50_{stem}.yaml"
        else:
            assert cfg == "configs/trainers/ZeroshotCLIP2/rn50.yaml"
    assert summarize.standard_cfg("imagenet", 16, "CoOp") == "rn50_ep50"
    assert summarize.standard_cfg("oxford_pets", 2, "CLIP_Adapter") == "rn50_ep100"
    assert summarize.standard_cfg("dtd", 4, "TipAdapter") == "rn50_dtd"


def test_coop_run_folder_parses_with_its_variant(tmp_path):
    match = summarize.METHOD_RUN_RE.match(f"rn50_ep50_vitb16_{COOP_VARIANT}_1shots")
    assert (match["cfg"], match["tag"], match["variant"], match["shots"]) == (
        "rn50_ep50", "vitb16", f"_{COOP_VARIANT}", "1")
    match = summarize.METHOD_RUN_RE.match("vit_b16_c4_ep10_batch1_ctxv1_rn50_16shots")
    assert (match["cfg"], match["tag"], match["shots"]) == ("vit_b16_c4_ep10_batch1_ctxv1", "rn50", "16")


def test_non_default_views_are_named_in_every_run_folder(tmp_path):
    from engine.config import get_cfg_default

    other = get_cfg_default().FEATURE_CACHE.TRAIN_VIEWS + 1
    cmds = dry("--methods", "CoOp LinearProbe TaskRes", "--datasets", "eurosat", "--shots", "2", "--seeds", "1",
               "--output", str(tmp_path), "--", "FEATURE_CACHE.TRAIN_VIEWS", str(other))
    trained = [c for c in cmds if "--eval-only" not in c.flags]
    assert len(trained) == 3
    assert all(f"_views{other}_2shots/seed1" in c["--output-dir"] for c in trained)
    plain = dry("--methods", "CoOp LinearProbe TaskRes", "--datasets", "eurosat", "--shots", "2", "--seeds", "1",
                "--output", str(tmp_path))
    assert all("_views" not in c["--output-dir"].split("/")[-2] for c in plain)


def test_summary_reads_views_runs_apart_and_shows_the_default_one(tmp_path):
    root = tmp_path / "output"
    coop, taskres = method_run_name("CoOp", 16), taskres_name("eurosat", 16, "regular")
    for name, method, views_name, offset in (("CoOp", "CoOp", coop.replace("_16shots", "_views8_16shots"), 45.0),
                                             ("TaskRes", "TaskRes", taskres.replace("_16shots", "_views8_16shots"), 53.0)):
        default_name = coop if name == "CoOp" else taskres
        write(str(root / "eurosat" / name / default_name / "seed1" / "log.txt"), train_log(offset))
        write(str(root / "eurosat" / name / views_name / "seed1" / "log.txt"), train_log(offset + 10))
    runs = [r for r in summarize.collect(str(root)) if r.kind == "train"]
    assert sorted((r.method, r.tag, r.views) for r in runs) == [
        ("CoOp", "rn50", 0), ("CoOp", "rn50", 8), ("TaskRes", "rn50", 0), ("TaskRes", "rn50", 8)]
    for method in ("CoOp", "TaskRes"):
        picked = summarize._pick([r for r in runs if r.method == method], "eurosat", 16)
        assert picked.views == 0 and "_views" not in picked.name
