"""The planner (scripts/plan.py) against the bash workflows it replaced: every case of
tests/data/dryrun_cases.json (the full default grids of compare.sh, train_regular.sh,
train_enhance.sh, test_dg.sh, scripts/taskres/*.sh, scripts/mvlpt/*.sh, and their option paths)
plans exactly the train.py commands, in the same order, that the bash scripts printed under
--dry-run at commit 63626ec (tests/data/dryrun_63626ec.json.gz, captured from an untouched
checkout with DATA=/datasets OUTPUT=/out PYTHON=false). Commands are compared as argument lists:
bash's printf %q and Python's shlex.quote quote the same argument differently."""
import gzip
import json
import os
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from scripts import plan  # noqa: E402

DATA = os.path.join(ROOT, "tests", "data")
CASES = json.load(open(os.path.join(DATA, "dryrun_cases.json")))
with gzip.open(os.path.join(DATA, "dryrun_63626ec.json.gz"), "rt") as f:
    BASELINE = json.load(f)
WORKFLOW = {script: name for name, (script, _, _) in plan.WORKFLOWS.items()}
ENV = {"DATA": "/datasets", "OUTPUT": "/out", "PYTHON": "false"}
# the trainers compare.sh ran at 63626ec; methods added since then add their own runs
BASELINE_TRAINERS = {"ZeroshotCLIP", "ZeroshotCLIP2", "LinearProbe", "CoOp", "CoCoOp", "CLIP_Adapter", "TipAdapter",
                     "TipAdapterF", "TaskRes", "StrongBase", "MVLPT"}


def deliberate(argv):
    """A 63626ec command as the planner plans it now, where a later issue changed it on purpose:
    MVLPT's best_val on ImageNet's val (= test) split is allowed explicitly (issue 20: refused
    otherwise, with a warning when allowed)."""
    argv = list(argv)
    if argv[argv.index("--trainer") + 1] == "MVLPT" and "best_val" in argv:
        at = argv.index("best_val") + 1
        argv[at:at] = ["TEST.ALLOW_VAL_IS_TEST", "True"]
    return argv


def baseline_runs(argvs):
    return [a for a in argvs if a[a.index("--trainer") + 1] in BASELINE_TRAINERS]


def case_env(case):
    env = dict(ENV)
    for key, value in (case[3] if len(case) > 3 else {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def planned(case):
    name, script, args = case[:3]
    _, runs = plan.plan(WORKFLOW[script], ["--dry-run", *args], env=case_env(case))
    argvs = [r.argv for g in plan.run_jobs.stages(runs) for r in g]
    return baseline_runs(argvs)


def test_the_baseline_is_the_full_default_grids():
    assert sum(len(v) for v in BASELINE.values()) == 5741
    assert len(BASELINE["compare_default"]) == 1501  # issue 17: "1,501 compare runs today"
    assert len(BASELINE["train_regular_default"]) == 11 * 5 * 3
    assert len(BASELINE["train_enhance_default"]) == 11 * 5 + 11 * 5 * 3


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_planner_plans_what_the_bash_workflows_ran(case, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("TASKRES_TRAINER_DIRS", raising=False)
    want = [deliberate(shlex.split(line)) for line in BASELINE[case[0]]]
    got = planned(case)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"run {i}:\n got {shlex.join(g)}\nwant {shlex.join(w)}"


# The ELEVATER workflows, written in bash after 63626ec: their dry-run commands at 51636f0 (the last commit
# where those scripts ran on their own bash helpers), captured with ENV from an untouched checkout.
ELEVATER = json.load(open(os.path.join(DATA, "dryrun_elevater_51636f0.json")))


def elevater_deliberate(argv):
    """As ``deliberate``, but the COCOOP kind keeps the original's three opts (no TEST.ALLOW_VAL_IS_TEST: an
    ELEVATER task's val split comes from its train sample, and COCOOP runs only on ELEVATER tasks)."""
    return list(argv) if "TRAINER.MVLPT.COCOOP.N_CTX" in argv else deliberate(argv)


@pytest.mark.parametrize("case", ELEVATER["cases"], ids=[c[0] for c in ELEVATER["cases"]])
def test_planner_plans_what_the_bash_elevater_workflows_ran(case, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("TASKRES_TRAINER_DIRS", raising=False)
    want = [elevater_deliberate(shlex.split(line)) for line in ELEVATER["baseline"][case[0]]]
    got = planned(case)
    assert got == want, "\n".join(f"got  {shlex.join(g)}\nwant {shlex.join(w)}" for g, w in zip(got, want) if g != w)


def test_bash_entry_point_prints_the_planned_commands(tmp_path):
    case = next(c for c in CASES if c[0] == "compare_root_flag")
    env = {k: v for k, v in os.environ.items() if k not in ("DATA", "OUTPUT", "STRONG_BASE", "PYTHON",
                                                             "TASKRES_TRAINER_DIRS")}
    env.update(ENV, TR_RUNNER_PYTHON=sys.executable)
    proc = subprocess.run(["bash", os.path.join(ROOT, case[1]), "--dry-run", *case[2]], capture_output=True,
                          text=True, env=env, cwd=str(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stderr
    printed = baseline_runs([shlex.split(line) for line in proc.stdout.splitlines()])
    assert printed == [deliberate(shlex.split(x)) for x in BASELINE[case[0]]]


def test_readme_dry_run_lines_work_as_written_without_data():
    """README's `... --dry-run` lines (issue 20: they failed with "no dataset root")."""
    lines = [line.split("#")[0].strip() for line in open(os.path.join(ROOT, "README.md"))
             if line.startswith("bash ") and "--dry-run" in line and "DATA=" not in line]
    assert len(lines) >= 2, lines
    env = {k: v for k, v in os.environ.items() if k not in ("DATA", "OUTPUT", "STRONG_BASE", "PYTHON")}
    env.update(TR_RUNNER_PYTHON=sys.executable, PYTHON="false")
    for line in lines:
        proc = subprocess.run(shlex.split(line), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (line, proc.stderr)
        assert proc.stdout and all("--root '<DATA>'" in c or "--root <DATA>" in c for c in proc.stdout.splitlines())
