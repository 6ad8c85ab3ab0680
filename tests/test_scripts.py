"""The published bash workflows (train_regular.sh, train_enhance.sh, test_dg.sh,
scripts/taskres/*.sh, thin entry points of scripts/plan.py): exact train.py command lines under
--dry-run, and the run loop (skip finished runs, go on after a failure, exit non-zero, stop the
sweep on Ctrl-C / SIGTERM) with a fake python."""
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import time

import pytest

from helpers import default_sigint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARK = ["stanford_cars", "oxford_flowers", "caltech101", "dtd", "fgvc_aircraft", "oxford_pets",
             "food101", "ucf101", "eurosat", "sun397", "imagenet"]
DG_TARGETS = ["imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"]
CLASS = {"stanford_cars": "StanfordCars", "oxford_flowers": "OxfordFlowers", "caltech101": "Caltech101",
         "dtd": "DescribableTextures", "fgvc_aircraft": "FGVCAircraft", "oxford_pets": "OxfordPets",
         "food101": "Food101", "ucf101": "UCF101", "eurosat": "EuroSAT", "sun397": "SUN397",
         "imagenet": "ImageNet"}
SCRIPTS = ["train_regular.sh", "train_enhance.sh", "test_dg.sh", "scripts/taskres/main.sh",
           "scripts/taskres/eval.sh", "scripts/taskres/zeroshot.sh", "scripts/taskres/strong_base.sh",
           "scripts/taskres/common.sh"]


def run_script(script, *args, env=None, cwd=ROOT):
    full_env = {k: v for k, v in os.environ.items() if k not in ("DATA", "OUTPUT", "STRONG_BASE", "PYTHON")}
    # the planner (scripts/plan.py) needs a real python; PYTHON is the fake one of the train.py runs
    full_env.update({"TR_RUNNER_PYTHON": sys.executable, **(env or {})})
    return subprocess.run(["bash", os.path.join(ROOT, script), *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=120)


class Cmd:
    """One train.py command line: flags, trailing KEY VALUE opts."""

    def __init__(self, line):
        self.argv = shlex.split(line)
        assert self.argv[1] == "train.py", line
        self.flags, self.opts = {}, {}
        rest = self.argv[2:]
        i = 0
        while i < len(rest) and rest[i].startswith("--"):
            if i + 1 < len(rest) and not rest[i + 1].startswith("--") and rest[i] != "--eval-only":
                self.flags[rest[i]] = rest[i + 1]
                i += 2
            else:
                self.flags[rest[i]] = True
                i += 1
        self.opt_list = rest[i:]
        assert len(self.opt_list) % 2 == 0, line
        self.opts = dict(zip(self.opt_list[::2], self.opt_list[1::2]))

    def __getitem__(self, key):
        return self.flags[key]


def planned(script, *args, env=None, cwd=ROOT):
    """The commands the workflow's --dry-run prints, planned in this process (what the bash entry
    point runs, without starting a python per call: tests/test_plan.py pins the entry points)."""
    from scripts import plan

    name = next(n for n, (s, _, _) in plan.WORKFLOWS.items() if s == script)
    full_env = {k: v for k, v in os.environ.items() if k not in ("DATA", "OUTPUT", "STRONG_BASE", "PYTHON")}
    full_env.update(env or {})
    here = os.getcwd()
    os.chdir(cwd)
    try:
        _, runs = plan.plan(name, ["--dry-run", *args], env=full_env)
    finally:
        os.chdir(here)
    return [shlex.join(r.argv) for group in plan.run_jobs.stages(runs) for r in group]


def dry_run(script, *args, env=None, cwd=ROOT):
    # PYTHON=false: should a dry run ever execute a command, it fails instead of training
    env = {"DATA": "/datasets", "PYTHON": "false", **(env or {})}
    return [Cmd(line) for line in planned(script, *args, env=env, cwd=cwd)]


def expected_cfg(dataset, shots):
    lr = "2e-4" if dataset == "imagenet" else "2e-3"
    return f"adam_lr{lr}_B256_ep{100 if shots <= 4 else 200}"


def expected_alpha(dataset):
    return "1.0" if dataset == "oxford_flowers" else "0.5"


@pytest.fixture(scope="module")
def regular_cmds(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    return out, dry_run("train_regular.sh", env={"OUTPUT": str(out)})


@pytest.fixture(scope="module")
def enhance_cmds(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    sb = tmp_path_factory.mktemp("sb")
    return out, sb, dry_run("train_enhance.sh", env={"OUTPUT": str(out), "STRONG_BASE": str(sb)})


def test_regular_default_grid_rules(regular_cmds):
    out, cmds = regular_cmds
    assert len(cmds) == 11 * 5 * 3
    seen = set()
    for c in cmds:
        dataset = re.fullmatch(r"configs/datasets/(\w+)\.yaml", c["--dataset-config-file"]).group(1)
        shots = int(c.opts["DATASET.NUM_SHOTS"])
        cfg = expected_cfg(dataset, shots)
        alpha = expected_alpha(dataset)
        assert c["--trainer"] == "TaskRes"
        assert c["--root"] == "/datasets"
        assert c["--config-file"] == f"configs/trainers/TaskRes/{cfg}.yaml"
        assert c.opts["TRAINER.TaskRes.RESIDUAL_SCALE"] == alpha
        assert c["--enhanced-base"] == "none"
        assert c["--backbone"] == "RN50"
        assert c["--output-dir"] == (f"{out}/{dataset}/TaskRes/{cfg}_rn50_regular-base_alpha{alpha}_{shots}shots"
                                     f"/seed{c['--seed']}")
        seen.add((dataset, shots, c["--seed"]))
    assert seen == {(d, k, s) for d in BENCHMARK for k in (1, 2, 4, 8, 16) for s in ("1", "2", "3")}
    flowers = [c for c in cmds if "oxford_flowers" in c["--dataset-config-file"]]
    assert {c.opts["TRAINER.TaskRes.RESIDUAL_SCALE"] for c in flowers} == {"1.0"}
    imagenet_16 = [c for c in cmds if "imagenet" in c["--dataset-config-file"] and c.opts["DATASET.NUM_SHOTS"] == "16"]
    assert {c["--config-file"] for c in imagenet_16} == {"configs/trainers/TaskRes/adam_lr2e-4_B256_ep200.yaml"}


def test_enhance_produces_bases_first_and_uses_them(enhance_cmds, regular_cmds):
    out, sb, cmds = enhance_cmds
    strong = [c for c in cmds if c["--trainer"] == "StrongBase"]
    taskres = [c for c in cmds if c["--trainer"] == "TaskRes"]
    assert len(strong) == 11 * 5 and len(taskres) == 11 * 5 * 3
    position = {id(c): i for i, c in enumerate(cmds)}
    for c in taskres:
        dataset = re.fullmatch(r"configs/datasets/(\w+)\.yaml", c["--dataset-config-file"]).group(1)
        shots = c.opts["DATASET.NUM_SHOTS"]
        base_file = f"{sb}/{CLASS[dataset]}/rn50_{shots}shots/model.pth.tar"
        assert c["--enhanced-base"] == base_file
        producer = [s for s in strong if s["--dataset-config-file"] == c["--dataset-config-file"]
                    and s.opts["DATASET.NUM_SHOTS"] == shots]
        assert len(producer) == 1 and position[id(producer[0])] < position[id(c)]
        assert "_enhanced-base_" in c["--output-dir"]
        assert c["--config-file"] == f"configs/trainers/TaskRes/{expected_cfg(dataset, int(shots))}.yaml"
        assert c.opts["TRAINER.TaskRes.RESIDUAL_SCALE"] == expected_alpha(dataset)
    for s in strong:
        dataset = re.fullmatch(r"configs/datasets/(\w+)\.yaml", s["--dataset-config-file"]).group(1)
        shots = s.opts["DATASET.NUM_SHOTS"]
        assert s["--config-file"] == "configs/trainers/StrongBase/adam_lr2e-4_ep50.yaml"
        assert s["--seed"] == "1"
        assert s.opts["STRONG_BASE.ROOT"] == str(sb)
        assert s["--output-dir"] == f"{out}/{dataset}/StrongBase/rn50_{shots}shots/seed1"
    # regular and enhanced runs never share a folder (the original's collision)
    regular_names = {os.path.relpath(c["--output-dir"], regular_cmds[0]) for c in regular_cmds[1]}
    enhanced_names = {os.path.relpath(c["--output-dir"], out) for c in taskres}
    assert len(enhanced_names) == len(taskres) and not regular_names & enhanced_names


def test_enhance_default_strong_base_root_is_repo_strong_base(tmp_path):
    cmds = dry_run("train_enhance.sh", "--datasets", "dtd", "--shots", "2", "--seeds", "1",
                   env={"OUTPUT": str(tmp_path)})
    assert cmds[0].opts["STRONG_BASE.ROOT"] == "strong_base"
    assert cmds[1]["--enhanced-base"] == "strong_base/DescribableTextures/rn50_2shots/model.pth.tar"


def test_narrowed_run_and_extra_opts_pass_through(tmp_path):
    cmds = dry_run("train_regular.sh", "--datasets", "oxford_pets eurosat", "--shots", "1 16", "--seeds", "1",
                   "--backbone", "RN50", "--", "OPTIM.MAX_EPOCH", "2", "TRAINER.TaskRes.PREC", "fp32",
                   env={"OUTPUT": str(tmp_path)})
    assert [(c["--dataset-config-file"], c.opts["DATASET.NUM_SHOTS"]) for c in cmds] == [
        ("configs/datasets/oxford_pets.yaml", "1"), ("configs/datasets/eurosat.yaml", "1"),
        ("configs/datasets/oxford_pets.yaml", "16"), ("configs/datasets/eurosat.yaml", "16")]
    for c in cmds:
        assert c.opt_list[-4:] == ["OPTIM.MAX_EPOCH", "2", "TRAINER.TaskRes.PREC", "fp32"]  # last: they win
        assert c["--seed"] == "1"


def test_backbone_names_the_folder(tmp_path):
    cmds = dry_run("train_regular.sh", "--datasets", "dtd", "--shots", "4", "--seeds", "2",
                   "--backbone", "ViT-B/16", env={"OUTPUT": str(tmp_path)})
    assert cmds[0]["--backbone"] == "ViT-B/16"
    assert cmds[0]["--output-dir"].endswith("/dtd/TaskRes/adam_lr2e-3_B256_ep100_vitb16_regular-base_alpha0.5_4shots/seed2")
    dg = dry_run("test_dg.sh", "--backbone", "ViT-B/16", "--seeds", "1", "--bases", "regular",
                 env={"OUTPUT": str(tmp_path)})
    assert {c["--config-file"] for c in dg} == {"configs/trainers/TaskRes/generalization_vit16.yaml"}


def test_dg_evaluates_all_imagenet_16shot_runs(tmp_path, regular_cmds, enhance_cmds):
    cmds = dry_run("test_dg.sh", env={"OUTPUT": str(tmp_path)})
    assert len(cmds) == 2 * 4 * 3
    # the original called a missing generalization_50 for ImageNet-R: all four use generalization_rn50
    assert {c["--config-file"] for c in cmds} == {"configs/trainers/TaskRes/generalization_rn50.yaml"}
    assert {c["--dataset-config-file"] for c in cmds} == {f"configs/datasets/{t}.yaml" for t in DG_TARGETS}
    trained = {os.path.relpath(c["--output-dir"], regular_cmds[0]) for c in regular_cmds[1]}
    trained |= {os.path.relpath(c["--output-dir"], enhance_cmds[0]) for c in enhance_cmds[2]
                if c["--trainer"] == "TaskRes"}
    for c in cmds:
        assert c["--eval-only"] is True and c["--load-epoch"] == "200" and c["--trainer"] == "TaskRes"
        model_dir = os.path.relpath(c["--model-dir"], tmp_path)
        assert model_dir in trained and model_dir.startswith("imagenet/TaskRes/adam_lr2e-4_B256_ep200_rn50_")
        assert model_dir.endswith(f"_16shots/seed{c['--seed']}")
        target = re.fullmatch(r"configs/datasets/(\w+)\.yaml", c["--dataset-config-file"]).group(1)
        assert os.path.relpath(c["--output-dir"], tmp_path) == "dg/" + target + "/" + model_dir.split("/", 1)[1]
        assert c.opts["TRAINER.TaskRes.RESIDUAL_SCALE"] == "0.5"
        if "_enhanced-base_" in model_dir:
            assert c["--enhanced-base"] == "strong_base/ImageNet/rn50_16shots/model.pth.tar"
        else:
            assert c["--enhanced-base"] == "none"
    assert len({c["--output-dir"] for c in cmds}) == len(cmds)
    assert {c["--seed"] for c in cmds} == {"1", "2", "3"}


def test_dg_load_epoch_follows_max_epoch_opt(tmp_path):
    cmds = dry_run("test_dg.sh", "--targets", "imagenet_r", "--seeds", "1", "--", "OPTIM.MAX_EPOCH", "2",
                   env={"OUTPUT": str(tmp_path)})
    assert [c["--load-epoch"] for c in cmds] == ["2", "2"]
    assert all(c.opt_list[-2:] == ["OPTIM.MAX_EPOCH", "2"] for c in cmds)
    cmds = dry_run("test_dg.sh", "--targets", "imagenet_a", "--seeds", "1", "--load-epoch", "7",
                   env={"OUTPUT": str(tmp_path)})
    assert [c["--load-epoch"] for c in cmds] == ["7", "7"]


def test_no_hard_coded_gpu_or_data_path_and_strict_mode():
    for script in SCRIPTS:
        text = open(os.path.join(ROOT, script)).read()
        assert not re.search(r"CUDA_VISIBLE_DEVICES=", text), script  # GPUs come from --gpus only
        assert "/data0" not in text, script
        assert "generalization_50" not in text, script
        if script.endswith("common.sh"):
            continue
        assert "set -euo pipefail" in text, script
        assert os.stat(os.path.join(ROOT, script)).st_mode & stat.S_IXUSR, script


def test_finished_runs_are_skipped(tmp_path):
    args = ("--datasets", "dtd", "--shots", "1", "--seeds", "1 2 3")
    first = dry_run("train_regular.sh", *args, env={"OUTPUT": str(tmp_path)})
    done = first[1]["--output-dir"]
    os.makedirs(done)
    open(os.path.join(done, "results_test.json"), "w").write('{"accuracy": 50.0}')
    os.makedirs(first[2]["--output-dir"])  # started but unfinished: must run again (resume)
    again = dry_run("train_regular.sh", *args, env={"OUTPUT": str(tmp_path)})
    assert [c["--seed"] for c in again] == ["1", "3"]


def test_other_scripts_dry_run(tmp_path):
    env = {"OUTPUT": str(tmp_path)}
    [c] = dry_run("scripts/taskres/main.sh", "oxford_flowers", "adam_lr2e-3_B256_ep200",
                  "strong_base/OxfordFlowers/rn50_8shots/model.pth.tar", "8", "1.0", "--seeds", "3", env=env)
    assert c["--output-dir"] == f"{tmp_path}/oxford_flowers/TaskRes/adam_lr2e-3_B256_ep200_rn50_enhanced-base_alpha1.0_8shots/seed3"
    assert c["--enhanced-base"] == "strong_base/OxfordFlowers/rn50_8shots/model.pth.tar"

    cmds = dry_run("scripts/taskres/eval.sh", "imagenet_r", "generalization_rn50", str(tmp_path / "ev"),
                   str(tmp_path / "models"), env=env)
    assert [c["--model-dir"] for c in cmds] == [f"{tmp_path}/models/seed{s}" for s in (1, 2, 3)]
    assert [c["--output-dir"] for c in cmds] == [f"{tmp_path}/ev/seed{s}" for s in (1, 2, 3)]
    assert {c["--load-epoch"] for c in cmds} == {"200"}

    cmds = dry_run("scripts/taskres/zeroshot.sh", "--datasets", "imagenet caltech101", env=env)
    assert [c["--output-dir"] for c in cmds] == [f"{tmp_path}/imagenet/ZeroshotCLIP/rn50",
                                                 f"{tmp_path}/caltech101/ZeroshotCLIP/rn50"]
    assert all(c["--trainer"] == "ZeroshotCLIP" and c["--eval-only"] is True and "--seed" not in c.flags
               for c in cmds)

    cmds = dry_run("scripts/taskres/strong_base.sh", "--datasets", "eurosat", "--shots", "4 8", env=env)
    assert [c.opts["DATASET.NUM_SHOTS"] for c in cmds] == ["4", "8"]
    assert all(c["--trainer"] == "StrongBase" for c in cmds)


def test_relative_output_is_relative_to_the_caller(tmp_path):
    [c] = dry_run("train_regular.sh", "--datasets", "dtd", "--shots", "1", "--seeds", "1", "--output", "out",
                  "--root", "data", cwd=str(tmp_path))
    assert c["--output-dir"].startswith(f"{tmp_path}/out/dtd/")
    assert c["--root"] == f"{tmp_path}/data"


def test_dry_run_needs_no_dataset_root_but_a_run_does(tmp_path):
    """README's `compare.sh --dry-run` lines work as written without DATA: a placeholder root."""
    proc = run_script("train_regular.sh", "--dry-run", "--datasets", "dtd", "--shots", "1", "--seeds", "1",
                      env={"PYTHON": "false", "OUTPUT": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    [c] = [Cmd(line) for line in proc.stdout.splitlines()]
    assert c["--root"] == "<DATA>" and "the commands show <DATA>" in proc.stderr
    proc = run_script("train_regular.sh", "--datasets", "dtd", "--shots", "1", "--seeds", "1",
                      env={"PYTHON": "false", "OUTPUT": str(tmp_path)})
    assert proc.returncode == 2 and "no dataset root: set DATA" in proc.stderr and not os.listdir(tmp_path)


@pytest.mark.parametrize("args, env, message", [
    (("--shots", "0"), {"DATA": "/d"}, "--shots: '0' is not valid"),
    (("--datasets", "mnist"), {"DATA": "/d"}, "--datasets: 'mnist' is not valid"),
    (("--bogus", "1"), {"DATA": "/d"}, "unknown option '--bogus'"),
    (("--", "TRAINER.TaskRes.RESIDUAL_SCALE", "0.7"), {"DATA": "/d"}, "pass --alpha instead"),
    (("--", "DATASET.NUM_SHOTS", "2"), {"DATA": "/d"}, "pass --shots instead"),
    (("--", "OPTIM.MAX_EPOCH"), {"DATA": "/d"}, "KEY VALUE pairs"),
    (("--alpha", "big"), {"DATA": "/d"}, "--alpha 'big' is not a number"),
    (("--", "OPTIM.MAX_EPOCH", "2", "--seeds", "1"), {"DATA": "/d"}, "put options before --"),
])
def test_bad_arguments_fail_with_one_clear_line(args, env, message):
    proc = run_script("train_regular.sh", "--dry-run", *args, env=env)
    assert proc.returncode == 2 and proc.stdout == ""
    assert message in proc.stderr, proc.stderr


FAKE_PYTHON = r"""#!/usr/bin/env bash
# Stands in for python: records its arguments, fails for one dataset, otherwise "finishes".
printf '%s\n' "$*" >> "$FAKE_LOG"
out=; sbroot=; shots=; dataset=; prev=
for a in "$@"; do
    case "$prev" in
        --output-dir) out=$a ;;
        --dataset-config-file) dataset=$(basename "$a" .yaml) ;;
        DATASET.NUM_SHOTS) shots=$a ;;
        STRONG_BASE.ROOT) sbroot=$a ;;
    esac
    prev=$a
done
case " $* " in *" configs/datasets/$FAKE_FAIL.yaml "*) echo "boom" >&2; exit 3 ;; esac
[[ -n "${FAKE_GPU_LOG:-}" ]] && echo "${CUDA_VISIBLE_DEVICES:-unset}" >> "$FAKE_GPU_LOG"
if [[ -n "${FAKE_MEET:-}" ]]; then
    # rendezvous: each run waits until FAKE_MEET_N runs have started, which happens only when
    # they run side by side (one after the other, the first would wait in vain and fail)
    mkdir -p "$FAKE_MEET" && : > "$FAKE_MEET/$$"
    for _ in $(seq 300); do
        (($(ls "$FAKE_MEET" | wc -l) >= FAKE_MEET_N)) && break
        sleep 0.1
    done
    (($(ls "$FAKE_MEET" | wc -l) >= FAKE_MEET_N)) || { echo "ran alone" >&2; exit 4; }
fi
if [[ -n "$sbroot" ]]; then
    [[ -n "${FAKE_NO_BASE:-}" ]] && exit 0  # "succeeds" without writing the base
    case $dataset in dtd) cls=DescribableTextures ;; oxford_pets) cls=OxfordPets ;; *) cls=X ;; esac
    mkdir -p "$sbroot/$cls/rn50_${shots}shots" && echo w > "$sbroot/$cls/rn50_${shots}shots/model.pth.tar"
fi
mkdir -p "$out" && echo '{"accuracy": 50.0}' > "$out/results_test.json"
"""


@pytest.fixture
def fake_env(tmp_path):
    fake = tmp_path / "fake_python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    log = tmp_path / "calls.log"
    return {"PYTHON": str(fake), "FAKE_LOG": str(log), "DATA": str(tmp_path / "data"),
            "OUTPUT": str(tmp_path / "out"), "STRONG_BASE": str(tmp_path / "sb"), "FAKE_FAIL": "eurosat"}, log


def test_failed_run_is_reported_and_the_workflow_goes_on(fake_env):
    env, log = fake_env
    args = ("--datasets", "eurosat dtd", "--shots", "1", "--seeds", "1 2")
    proc = run_script("train_regular.sh", *args, env=env)
    assert proc.returncode == 1
    calls = log.read_text().splitlines()
    assert len(calls) == 4  # both eurosat seeds failed, both dtd seeds still ran
    assert "2 run(s) failed" in proc.stderr and "FAILED (exit 3): TaskRes eurosat 1-shot regular-base seed1" in proc.stderr
    log.write_text("")
    proc = run_script("train_regular.sh", *args, env=env)
    calls = log.read_text().splitlines()
    assert proc.returncode == 1 and len(calls) == 2 and all("eurosat" in c for c in calls)  # dtd skipped
    env["FAKE_FAIL"] = "none"
    log.write_text("")
    assert run_script("train_regular.sh", *args, env=env).returncode == 0
    assert run_script("train_regular.sh", *args, env=env).returncode == 0
    assert len(log.read_text().splitlines()) == 2  # the second pass found everything finished


def test_enhance_makes_the_base_once_then_trains(fake_env):
    env, log = fake_env
    args = ("--datasets", "dtd", "--shots", "2", "--seeds", "1 2")
    assert run_script("train_enhance.sh", *args, env=env).returncode == 0
    calls = log.read_text().splitlines()
    assert ["StrongBase" in c for c in calls] == [True, False, False]
    assert f"--enhanced-base {env['STRONG_BASE']}/DescribableTextures/rn50_2shots/model.pth.tar" in calls[1]
    log.write_text("")
    assert run_script("train_enhance.sh", *args, "--seeds", "1 2 3", env=env).returncode == 0
    calls = log.read_text().splitlines()
    assert len(calls) == 1 and "--seed 3" in calls[0]  # base exists, seeds 1-2 finished


def test_enhance_skips_training_when_the_base_was_not_made(fake_env):
    env, log = fake_env
    env["FAKE_NO_BASE"] = "1"
    proc = run_script("train_enhance.sh", "--datasets", "oxford_pets", "--shots", "1", "--seeds", "1", env=env)
    assert proc.returncode == 1
    assert "did not write" in proc.stderr and "its enhanced base" in proc.stderr
    assert len(log.read_text().splitlines()) == 1  # only the StrongBase attempt


def test_dg_reports_a_missing_checkpoint(fake_env):
    env, log = fake_env
    proc = run_script("test_dg.sh", "--targets", "imagenetv2", "--seeds", "1", "--bases", "regular", env=env)
    assert proc.returncode == 1 and "prompt_learner/model.pth.tar-200 is missing" in proc.stderr
    assert not log.exists()


def test_default_python_is_the_venv(tmp_path):
    proc = run_script("train_regular.sh", "--dry-run", "--datasets", "dtd", "--shots", "1", "--seeds", "1",
                      env={"DATA": "/d", "OUTPUT": str(tmp_path)})
    expected = ".venv/bin/python" if os.access(os.path.join(ROOT, ".venv/bin/python"), os.X_OK) else "python3"
    assert proc.returncode == 0 and shlex.split(proc.stdout)[0] == expected
    proc = run_script("train_regular.sh", "--dry-run", env={"DATA": "/d", "PYTHON": "/no/such/python"})
    assert proc.returncode == 2 and "PYTHON=/no/such/python is not an executable" in proc.stderr


@pytest.mark.parametrize("backbone, tag", [("RN50", "rn50"), ("RN50x16", "rn50x16"), ("ViT-B/16", "vitb16"),
                                           ("ViT-L/14@336px", "vitl14336px"), ("weights/My-CLIP@v2.pt", "myclipv2")])
def test_backbone_tag_matches_the_strong_base_writer_rule(backbone, tag, tmp_path):
    """The planner's backbone_tag and trainers/clip_trainer.py's backbone_tag (which names the
    strong_base/ files StrongBase writes) give the same tag, so the scripts find those files."""
    from trainers.clip_trainer import backbone_tag

    if backbone.endswith(".pt"):  # a weights file: both use its base name without the extension
        path = tmp_path / backbone
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")
        backbone = str(path)
    from scripts.plan import backbone_tag as planner_tag

    assert backbone_tag(backbone) == tag
    assert planner_tag(backbone) == tag


def test_backbone_comes_from_the_trainer_config(tmp_path):
    env = {"OUTPUT": str(tmp_path), "STRONG_BASE": str(tmp_path / "sb")}
    narrow = ("--datasets", "dtd", "--shots", "4", "--seeds", "1")
    [c] = dry_run("train_regular.sh", *narrow, "--cfg", "adam_lr2e-4_B256_ep200_ViT16", env=env)
    assert c["--backbone"] == "ViT-B/16"
    assert c["--config-file"] == "configs/trainers/TaskRes/adam_lr2e-4_B256_ep200_ViT16.yaml"
    assert c["--output-dir"].endswith("/adam_lr2e-4_B256_ep200_ViT16_vitb16_regular-base_alpha0.5_4shots/seed1")
    # --backbone still wins over the config
    [c] = dry_run("train_regular.sh", *narrow, "--cfg", "adam_lr2e-4_B256_ep200_ViT16", "--backbone", "RN101", env=env)
    assert c["--backbone"] == "RN101" and "_rn101_regular-base_" in c["--output-dir"]
    # the enhanced base is made and looked up with the runs' backbone
    strong, run = dry_run("train_enhance.sh", *narrow, "--cfg", "adam_lr2e-4_B256_ep200_RN101", env=env)
    assert strong["--trainer"] == "StrongBase" and strong["--backbone"] == "RN101"
    assert strong["--output-dir"].endswith("/dtd/StrongBase/rn101_4shots/seed1")
    assert run["--enhanced-base"] == f"{tmp_path}/sb/DescribableTextures/rn101_4shots/model.pth.tar"
    # DG: source folder, enhanced base and generalization config all follow the config's backbone
    cmds = dry_run("test_dg.sh", "--targets", "imagenet_a", "--seeds", "1", "--cfg", "adam_lr2e-4_B256_ep200_ViT32",
                   env=env)
    assert {c["--config-file"] for c in cmds} == {"configs/trainers/TaskRes/generalization_vit32.yaml"}
    assert {c["--backbone"] for c in cmds} == {"ViT-B/32"}
    assert all("_ViT32_vitb32_" in c["--model-dir"] for c in cmds)
    assert [c["--enhanced-base"] for c in cmds] == ["none", f"{tmp_path}/sb/ImageNet/vitb32_16shots/model.pth.tar"]


@pytest.mark.parametrize("script, args", [
    ("scripts/taskres/eval.sh", ("imagenet_r", "generalization_rn5O", "ev", "models")),
    ("scripts/taskres/eval.sh", ("imagenet_r", "generalisation_rn50_ep200", "ev", "models")),
    ("train_regular.sh", ("--cfg", "adam_lr2e-3_B256_ep20O")),
    ("test_dg.sh", ("--cfg", "adam_lr2e-4_B265_ep200")),
])
def test_config_typo_stops_the_workflow(tmp_path, script, args):
    # the config name is resolved inside $(...): the error there must end the whole script
    proc = run_script(script, "--dry-run", *args, env={"DATA": "/d", "OUTPUT": str(tmp_path), "PYTHON": "false"},
                      cwd=str(tmp_path))
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout
    assert "error: no trainer config" in proc.stderr and "names there:" in proc.stderr


def test_config_without_a_backbone_needs_the_flag(tmp_path):
    # a TaskRes config without MODEL.BACKBONE.NAME: the planner says to pass --backbone, and runs nothing
    from scripts import plan

    opts = plan.Options("train_regular.sh", "datasets shots seeds backbone cfg dry-run", ["--dry-run"],
                        "", env={"PYTHON": "false"})
    with pytest.raises(plan.PlanError, match="names no backbone .*--backbone"):
        plan.Planner(opts).backbone_for("configs/datasets/dtd.yaml")


def test_integer_alpha_passes_through_unchanged(tmp_path, fake_env):
    [c] = dry_run("train_regular.sh", "--datasets", "dtd", "--shots", "1", "--seeds", "1", "--alpha", "1",
                  env={"OUTPUT": str(tmp_path)})
    assert c.opts["TRAINER.TaskRes.RESIDUAL_SCALE"] == "1"
    assert c["--output-dir"].endswith("_regular-base_alpha1_1shots/seed1")
    env, log = fake_env
    assert run_script("train_regular.sh", "--datasets", "dtd", "--shots", "1", "--seeds", "1", "--alpha", "1",
                      env=env).returncode == 0
    assert log.read_text().split()[-2:] == ["TRAINER.TaskRes.RESIDUAL_SCALE", "1"]


@pytest.mark.parametrize("args, message", [
    (("--jobs", "0"), "--jobs '0' is not a positive whole number"),
    (("--gpus", "0;1"), "--gpus '0;1' is not a comma-separated list"),
    (("--submit", "pbs"), "--submit 'pbs' is not valid"),
])
def test_bad_parallel_options_fail_with_one_clear_line(args, message):
    proc = run_script("train_regular.sh", "--dry-run", *args, env={"DATA": "/d"})
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def runner_env(env):
    # the fake python stands in for train.py; scripts/run_jobs.py itself needs a real python
    import sys
    return {**env, "TR_RUNNER_PYTHON": sys.executable}


def test_jobs_run_side_by_side_each_pinned_to_a_gpu(fake_env, tmp_path):
    env, log = fake_env
    env = runner_env({**env, "FAKE_FAIL": "none", "FAKE_GPU_LOG": str(tmp_path / "gpus.log"),
                      "FAKE_MEET": str(tmp_path / "meet"), "FAKE_MEET_N": "2"})
    args = ("--datasets", "dtd", "--shots", "1", "--seeds", "1 2", "--gpus", "0,1")
    proc = run_script("train_regular.sh", *args, env=env)
    assert proc.returncode == 0, proc.stderr
    assert sorted((tmp_path / "gpus.log").read_text().split()) == ["0", "1"]  # one run per GPU
    assert sorted(c.split("--seed ")[1].split()[0] for c in log.read_text().splitlines()) == ["1", "2"]
    out = tmp_path / "out" / "dtd" / "TaskRes" / "adam_lr2e-3_B256_ep100_rn50_regular-base_alpha0.5_1shots"
    assert (out / "seed1" / "results_test.json").exists() and (out / "seed2" / "results_test.json").exists()
    assert len(list((tmp_path / "out" / "jobs").glob("*.log"))) == 2  # each run's console output
    # the skip rule holds: a second pass finds both finished and starts nothing
    log.write_text("")
    assert run_script("train_regular.sh", *args, env=env).returncode == 0
    assert log.read_text() == ""


def test_jobs_report_failures_and_finish_the_rest(fake_env):
    env, log = fake_env
    proc = run_script("train_regular.sh", "--datasets", "eurosat dtd", "--shots", "1", "--seeds", "1",
                      "--jobs", "2", env=runner_env(env))
    assert proc.returncode == 1
    assert "1 run(s) failed" in proc.stderr and "TaskRes eurosat 1-shot regular-base seed1" in proc.stderr
    assert len(log.read_text().splitlines()) == 2


def test_jobs_enhance_makes_every_base_before_the_runs(fake_env):
    env, log = fake_env
    proc = run_script("train_enhance.sh", "--datasets", "dtd oxford_pets", "--shots", "2", "--seeds", "1 2",
                      "--jobs", "3", env=runner_env({**env, "FAKE_FAIL": "none"}))
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text().splitlines()
    assert ["StrongBase" in c for c in calls] == [True, True, False, False, False, False]


def test_submit_through_submitit_local_executor(fake_env, tmp_path):
    env, log = fake_env
    proc = run_script("train_regular.sh", "--datasets", "eurosat dtd", "--shots", "1", "--seeds", "1",
                      "--submit", "local", "--submit-opts", "timeout_min=5", env=runner_env(env))
    assert proc.returncode == 1, proc.stderr  # eurosat fails, dtd finishes
    assert "submitted job" in proc.stderr and "FAILED (job" in proc.stderr
    assert "1 run(s) failed" in proc.stderr and "TaskRes eurosat 1-shot regular-base seed1" in proc.stderr
    done = tmp_path / "out" / "dtd" / "TaskRes" / "adam_lr2e-3_B256_ep100_rn50_regular-base_alpha0.5_1shots" / "seed1"
    assert (done / "results_test.json").exists()
    log.write_text("")  # same folders and skip rule: only the failed run is submitted again
    proc = run_script("train_regular.sh", "--datasets", "eurosat dtd", "--shots", "1", "--seeds", "1",
                      "--submit", "local", env=runner_env(env))
    assert proc.returncode == 1 and [("eurosat" in c) for c in log.read_text().splitlines()] == [True]


def test_non_default_views_are_named_in_the_run_folder(tmp_path):
    from engine.config import get_cfg_default

    default = get_cfg_default().FEATURE_CACHE.TRAIN_VIEWS
    other = default * 2
    env = {"OUTPUT": str(tmp_path)}
    [c] = dry_run("train_regular.sh", "--datasets", "dtd", "--shots", "1", "--seeds", "1", "--",
                  "FEATURE_CACHE.TRAIN_VIEWS", str(other), env=env)
    assert c["--output-dir"].endswith(f"_regular-base_alpha0.5_views{other}_1shots/seed1")
    assert c.opts["FEATURE_CACHE.TRAIN_VIEWS"] == str(other)
    # The default V, passed explicitly or not, is the default run: one folder, no suffix.
    [d] = dry_run("train_regular.sh", "--datasets", "dtd", "--shots", "1", "--seeds", "1", "--",
                  "FEATURE_CACHE.TRAIN_VIEWS", str(default), env=env)
    [n] = dry_run("train_regular.sh", "--datasets", "dtd", "--shots", "1", "--seeds", "1", env=env)
    assert d["--output-dir"] == n["--output-dir"] and "_views" not in n["--output-dir"].split("/")[-2]
    # DG evaluation finds the checkpoints of the run that trained with that V.
    cmds = dry_run("test_dg.sh", "--seeds", "1", "--", "FEATURE_CACHE.TRAIN_VIEWS", str(other), env=env)
    assert cmds and all(f"_views{other}_16shots/seed1" in c["--model-dir"] for c in cmds)


def test_taskres_opts_after_dashes_reach_only_the_taskres_runs(tmp_path):
    """StrongBase (and ZeroshotCLIP) do not read TRAINER.TaskRes.*, and train.py refuses another
    trainer's key: the workflow passes those pairs to the TaskRes runs only, the rest to all."""
    cmds = dry_run("train_enhance.sh", "--datasets", "dtd", "--shots", "2", "--seeds", "1", "--",
                   "TRAINER.TaskRes.PREC", "fp32", "OPTIM.MAX_EPOCH", "2",
                   env={"OUTPUT": str(tmp_path / "out"), "STRONG_BASE": str(tmp_path / "sb")})
    by_trainer = {}
    for c in cmds:
        by_trainer.setdefault(c["--trainer"], []).append(c)
    assert set(by_trainer) == {"StrongBase", "TaskRes"}
    for c in by_trainer["StrongBase"]:
        assert "TRAINER.TaskRes.PREC" not in c.opts and c.opts["OPTIM.MAX_EPOCH"] == "2"
    for c in by_trainer["TaskRes"]:
        assert c.opts["TRAINER.TaskRes.PREC"] == "fp32" and c.opts["OPTIM.MAX_EPOCH"] == "2"


# ---- Ctrl-C and SIGTERM stop the whole sweep (issue 20) -------------------------------------------
SIGNAL_PYTHON = r"""#!/usr/bin/env bash
# Stands in for train.py: records its call, then runs until a signal ends it the way train.py does
# (exit 130 on SIGINT, 143 on SIGTERM), or dies by SIGINT itself (FAKE_MODE=selfint).
printf '%s\n' "$*" >> "$FAKE_LOG"
if [[ "${FAKE_MODE:-}" == selfint ]]; then trap - INT; kill -INT $$; fi
trap 'exit 130' INT
trap 'exit 143' TERM
: > "$FAKE_MARK"
for _ in $(seq 600); do sleep 0.1; done
"""


def start_sweep(tmp_path, mode="", *options):
    fake = tmp_path / "fake_python"
    fake.write_text(SIGNAL_PYTHON)
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("DATA", "OUTPUT", "STRONG_BASE", "PYTHON")}
    env.update(PYTHON=str(fake), TR_RUNNER_PYTHON=sys.executable, DATA=str(tmp_path / "data"),
               OUTPUT=str(tmp_path / "out"), FAKE_LOG=str(tmp_path / "calls.log"), FAKE_MARK=str(tmp_path / "mark"),
               FAKE_MODE=mode)
    proc = subprocess.Popen(["bash", os.path.join(ROOT, "train_regular.sh"), "--datasets", "dtd", "--shots", "1",
                             "--seeds", "1 2 3", *options], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=default_sigint)
    return proc


def wait_for(path, proc, seconds=120):
    deadline = time.time() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the first run never started"
        time.sleep(0.1)


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_stops_the_sweep_with_one_line_on_resuming(tmp_path, how):
    proc = start_sweep(tmp_path)
    wait_for(tmp_path / "mark", proc)
    if how == "ctrl-c":  # the terminal sends SIGINT to the whole foreground group
        os.killpg(proc.pid, signal.SIGINT)
    else:  # Slurm before preemption, `kill PID`: the sweep only; it passes it on to the run
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == (130 if how == "ctrl-c" else 143), err
    assert len((tmp_path / "calls.log").read_text().splitlines()) == 1  # seeds 2 and 3 never started
    lines = [line for line in err.splitlines() if "run the same command again to resume" in line]
    assert len(lines) == 1 and "FAILED" not in err, err


def test_ctrl_c_stops_runs_side_by_side_and_starts_no_more(tmp_path):
    proc = start_sweep(tmp_path, "", "--jobs", "2")
    wait_for(tmp_path / "mark", proc)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert len((tmp_path / "calls.log").read_text().splitlines()) <= 2  # seed 3 never started
    assert "run the same command again to resume" in err and "FAILED" not in err


def test_a_run_that_dies_by_sigint_stops_the_sweep(tmp_path):
    proc = start_sweep(tmp_path, mode="selfint")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert len((tmp_path / "calls.log").read_text().splitlines()) == 1
    assert "run the same command again to resume" in err and "FAILED" not in err
