"""Run a workflow's run records: in order here, side by side (--jobs/--gpus), or as Slurm jobs.

scripts/plan.py decides *which* runs are needed (finished runs are skipped there) and hands
them here as ``Run`` records, each with a stage: every run of a stage finishes before the next
stage starts (a barrier: the enhanced bases before the runs on them, training before the
evaluations of its checkpoints). What a run needs (a config file, a base, a trained run's
checkpoint) is checked when it is due; a run that cannot start or fails is reported and the
others go on; the exit status is 1 when any failed.

Locally, ``jobs`` runs go at once, each with its own slot; slot s sees only GPU
gpus[s mod len(gpus)] (CUDA_VISIBLE_DEVICES), so runs on one GPU never exceed
ceil(jobs / len(gpus)); each run's console output goes to <OUTPUT>/jobs/. With ``submit`` each
run is one submitit job (Slurm, or submitit's local executor to try it here). Runs share the
feature cache: its bundles are merged under a file lock (engine/features.py), and train.py's
output-folder lock keeps two copies of one run from writing the same folder.

Ctrl-C (SIGINT) or SIGTERM stops the whole sweep, not only the run in progress: a run that
ends by SIGINT (exit 130, or killed by the signal) stops it too. Finished runs are kept, and
running the same command again resumes (train.py resumes an interrupted run from its last
checkpoint).
"""
import logging
import os
import queue
import re
import shlex
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Optional, Tuple

logger = logging.getLogger("run_jobs")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESUME = "interrupted: the sweep stopped; finished runs are kept, run the same command again to resume"
# exit statuses that mean "interrupted", not "failed": SIGINT / SIGTERM as a signal or as 128 + n
STOP_CODES = (130, 143, -signal.SIGINT, -signal.SIGTERM)


@dataclass
class Run:
    """One train.py call of a workflow."""

    label: str                                   # what the log lines call it
    argv: list                                   # the command, run from the repository root
    out_dir: str                                 # its output folder (results_test.json there = finished)
    stage: int = 0                               # runs of a later stage start after every earlier one ended
    requires: Tuple[Tuple[str, str], ...] = ()   # (path, failure message): must exist when the run is due
    writes: Optional[Tuple[str, str]] = None     # (path, failure message): must exist after it succeeded
    env: dict = field(default_factory=dict)      # extra environment (CUDA_VISIBLE_DEVICES of its slot)


class Exit(Exception):
    """Leave with this status after printing ``text`` (--help)."""

    def __init__(self, code, text=""):
        super().__init__(text)
        self.code, self.text = code, text


class Stop(Exception):
    """The sweep was interrupted (Ctrl-C, SIGTERM, or a run that died by SIGINT)."""

    def __init__(self, code):
        super().__init__(code)
        self.code = code


def slug(label):
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_")[:150]


def parse_submit_opts(text):
    """'slurm_partition=gpu timeout_min=600' -> {'slurm_partition': 'gpu', 'timeout_min': 600}."""
    opts = {}
    for word in (text or "").split():
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise Exit(2, f"error: --submit-opts '{word}' is not KEY=VALUE (e.g. slurm_partition=gpu)")
        opts[key] = int(value) if value.isdigit() else value
    return opts


class Sweep:
    """The state of one execution: failures in order, the children running, the stop flag."""

    def __init__(self):
        self.failed = []
        self.stopped = None  # exit status once interrupted
        self.children = set()
        self.lock = threading.Lock()

    def fail(self, label):
        with self.lock:
            if label not in self.failed:
                self.failed.append(label)

    def due(self, run):
        """Whether a run can start now; records why not."""
        for path, message in run.requires:
            if not os.path.exists(path):
                logger.info("FAILED: %s", message)
                self.fail(message)
                return False
        return True

    def ended(self, run, rc, where=""):
        if rc in STOP_CODES:
            self.stop(130 if rc in (130, -signal.SIGINT) else 143)
            return
        if rc:
            logger.info("FAILED (exit %d): %s%s", rc, run.label, where)
            self.fail(run.label)
            return
        if run.writes and not os.path.exists(run.writes[0]):
            logger.info("FAILED: %s", run.writes[1])
            self.fail(run.writes[1])

    def stop(self, code):
        with self.lock:
            if self.stopped is None:
                self.stopped = code
            children = list(self.children)
        for child in children:  # each child saves nothing half-written: train.py stops cleanly on SIGINT
            if child.poll() is None:
                try:
                    child.send_signal(signal.SIGINT if code == 130 else signal.SIGTERM)
                except OSError:
                    pass

    def popen(self, argv, env, **kwargs):
        child = subprocess.Popen(argv, cwd=ROOT, env=env, **kwargs)
        with self.lock:
            self.children.add(child)
        return child

    def wait(self, child):
        while True:
            try:
                rc = child.wait()
                break
            except KeyboardInterrupt:  # the terminal sent SIGINT to the child too; let it end cleanly
                self.stop(130)
        with self.lock:
            self.children.discard(child)
        return rc

    def check(self):
        if self.stopped is not None:
            raise Stop(self.stopped)


def run_here(sweep, runs):
    """One after the other, console output here (as bash ran them)."""
    for run in runs:
        sweep.check()
        if not sweep.due(run):
            continue
        logger.info("start: %s", run.label)
        child = sweep.popen(run.argv, dict(os.environ, **run.env))
        sweep.ended(run, sweep.wait(child))
    sweep.check()


def run_local(sweep, runs, jobs, gpus, log_dir):
    """At most ``jobs`` at once; each run's console output in log_dir."""
    slots = queue.Queue()
    for s in range(jobs):
        slots.put(s)
    os.makedirs(log_dir, exist_ok=True)
    index = len(os.listdir(log_dir))

    def one(number, run):
        slot = slots.get()
        try:
            if sweep.stopped is not None or not sweep.due(run):
                return
            env = dict(os.environ, **run.env)
            where = ""
            if gpus:
                env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
                where = f" on GPU {env['CUDA_VISIBLE_DEVICES']}"
            log_path = os.path.join(log_dir, f"{number:04d}-{slug(run.label)}.log")
            logger.info("start%s: %s (console output: %s)", where, run.label, log_path)
            with open(log_path, "w") as log:
                child = sweep.popen(run.argv, env, stdout=log, stderr=subprocess.STDOUT)
                rc = sweep.wait(child)
            sweep.ended(run, rc, f" (see {log_path})")
            if not rc and sweep.stopped is None:
                logger.info("done: %s", run.label)
        finally:
            slots.put(slot)

    threads = [threading.Thread(target=one, args=(index + i, run)) for i, run in enumerate(runs)]
    for t in threads:  # each thread waits for a free slot, so at most `jobs` commands run
        t.start()
    for t in threads:
        while t.is_alive():
            try:
                t.join()
            except KeyboardInterrupt:
                sweep.stop(130)
    sweep.check()


def run_submitit(sweep, runs, cluster, opts, log_dir):
    """One submitit job per run (1 GPU each on Slurm); waits for all."""
    import submitit
    from submitit.helpers import CommandFunction

    executor = submitit.AutoExecutor(folder=os.path.join(log_dir, "%j"), cluster=cluster)
    params = {"timeout_min": 24 * 60, "name": "taskres"}
    if cluster == "slurm":
        params.update(gpus_per_node=1, tasks_per_node=1, nodes=1)
    params.update(opts)
    executor.update_parameters(**params)
    jobs = []
    for run in runs:
        if not sweep.due(run):
            continue
        job = executor.submit(CommandFunction(run.argv, cwd=ROOT, verbose=False))
        logger.info("submitted job %s: %s", job.job_id, run.label)
        jobs.append((run, job))
    try:
        for run, job in jobs:
            try:
                job.result()
                logger.info("done (job %s): %s", job.job_id, run.label)
                sweep.ended(run, 0)
            except (submitit.core.utils.FailedJobError, subprocess.CalledProcessError) as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                logger.info("FAILED (job %s): %s (%s; logs in %s)", job.job_id, run.label, first, log_dir)
                sweep.fail(run.label)
    except KeyboardInterrupt:
        logger.info("the submitted jobs keep running on the cluster; a later run of the same command skips the "
                    "finished ones")
        sweep.stop(130)
    sweep.check()


def stages(runs):
    """Consecutive groups of runs by stage (the barriers)."""
    groups = []
    for run in sorted(runs, key=lambda r: r.stage):  # stable: the planner's order within a stage
        if not groups or groups[-1][0] != run.stage:
            groups.append((run.stage, []))
        groups[-1][1].append(run)
    return [group for _, group in groups]


def execute(runs, dry_run=False, jobs=1, gpus=(), submit="", submit_opts="", log_dir="output/jobs"):
    """Run (or under dry_run print) the runs, stage after stage; returns the exit status."""
    if dry_run:
        for group in stages(runs):
            for run in group:
                print(" ".join(shlex.quote(a) for a in run.argv), flush=True)
        return 0
    queued = jobs > 1 or bool(gpus) or bool(submit)
    sweep = Sweep()
    previous = {}

    def on_term(signum, frame):
        sweep.stop(143)
        if not queued and not sweep.children:
            raise Stop(143)

    previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, on_term)
    try:
        options = parse_submit_opts(submit_opts) if submit else None
        for group in stages(runs):
            if submit:
                run_submitit(sweep, group, submit, options, log_dir)
            elif queued:
                run_local(sweep, group, jobs, list(gpus), log_dir)
            else:
                run_here(sweep, group)
    except Stop as stop:
        logger.info("%s", RESUME)
        return stop.code
    except KeyboardInterrupt:
        sweep.stop(130)
        logger.info("%s", RESUME)
        return 130
    except Exit as e:
        logger.info("%s", e.text)
        return e.code
    finally:
        signal.signal(signal.SIGTERM, previous[signal.SIGTERM])
    if sweep.failed:
        logger.info("%d run(s) failed:", len(sweep.failed))
        for label in sweep.failed:
            logger.info("  %s", label)
        return 1
    logger.info("all runs done")
    return 0
