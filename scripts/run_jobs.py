"""Run the queued train.py commands of a workflow side by side, or as Slurm jobs.

The bash workflows (scripts/taskres/common.sh) decide *which* runs are needed (finished runs
are skipped there) and queue one file per run: its label on the first line, then its argv
NUL-separated. This script runs the queue and waits for every run:

    python scripts/run_jobs.py --queue DIR --jobs 4 --gpus 0,1,2,3 --log-dir OUT/jobs --failed FILE
    python scripts/run_jobs.py --queue DIR --submit slurm --submit-opts "slurm_partition=gpu timeout_min=600"

Locally, ``--jobs`` runs go at once, each with its own slot; slot s sees only GPU
gpus[s mod len(gpus)] (CUDA_VISIBLE_DEVICES), so runs on one GPU never exceed
ceil(jobs / len(gpus)). With ``--submit`` each run is one submitit job (Slurm, or submitit's
local executor to try it on this machine). The labels of failed runs go to ``--failed``,
one a line; the exit status is 1 when any run failed. Runs share the feature cache: its
bundles are merged under a file lock (engine/features.py), and train.py's output-folder lock
keeps two copies of one run from writing the same folder.
"""
import argparse
import glob
import logging
import os
import queue
import re
import subprocess
import sys
import threading

logger = logging.getLogger("run_jobs")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_queue(folder):
    """[(label, argv)] of the queued runs, in the order they were queued."""
    runs = []
    for path in sorted(glob.glob(os.path.join(folder, "*.run"))):
        with open(path, "rb") as f:
            label, _, rest = f.read().partition(b"\n")
        argv = [a.decode() for a in rest.split(b"\0")[:-1]]
        if not argv:
            raise SystemExit(f"error: queued run {path} holds no command; run the workflow again")
        runs.append((label.decode(), argv))
    return runs


def slug(label):
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_")[:150]


def parse_submit_opts(text):
    """'slurm_partition=gpu timeout_min=600' -> {'slurm_partition': 'gpu', 'timeout_min': 600}."""
    opts = {}
    for word in (text or "").split():
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: --submit-opts '{word}' is not KEY=VALUE (e.g. slurm_partition=gpu)")
        opts[key] = int(value) if value.isdigit() else value
    return opts


def run_local(runs, jobs, gpus, log_dir):
    """Run ``runs`` with at most ``jobs`` at once; returns the failed labels."""
    slots = queue.Queue()
    for s in range(jobs):
        slots.put(s)
    failed, lock = [], threading.Lock()
    os.makedirs(log_dir, exist_ok=True)

    def one(index, label, argv):
        slot = slots.get()
        try:
            env = dict(os.environ)
            where = ""
            if gpus:
                env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
                where = f" on GPU {env['CUDA_VISIBLE_DEVICES']}"
            log_path = os.path.join(log_dir, f"{index:04d}-{slug(label)}.log")
            logger.info("start%s: %s (console output: %s)", where, label, log_path)
            with open(log_path, "w") as log:
                rc = subprocess.call(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            if rc:
                logger.info("FAILED (exit %d): %s (see %s)", rc, label, log_path)
                with lock:
                    failed.append(label)
            else:
                logger.info("done: %s", label)
        finally:
            slots.put(slot)

    threads = [threading.Thread(target=one, args=(i, label, argv)) for i, (label, argv) in enumerate(runs)]
    for t in threads:  # each thread waits for a free slot, so at most `jobs` commands run
        t.start()
    for t in threads:
        t.join()
    return sorted(failed, key=[label for label, _ in runs].index)


def run_submitit(runs, cluster, opts, log_dir):
    """One submitit job per run (1 GPU each on Slurm); waits for all; returns the failed labels."""
    import submitit
    from submitit.helpers import CommandFunction

    executor = submitit.AutoExecutor(folder=os.path.join(log_dir, "%j"), cluster=cluster)
    params = {"timeout_min": 24 * 60, "name": "taskres"}
    if cluster == "slurm":
        params.update(gpus_per_node=1, tasks_per_node=1, nodes=1)
    params.update(opts)
    executor.update_parameters(**params)
    jobs = []
    for label, argv in runs:
        job = executor.submit(CommandFunction(argv, cwd=ROOT, verbose=False))
        logger.info("submitted job %s: %s", job.job_id, label)
        jobs.append((label, job))
    failed = []
    for label, job in jobs:
        try:
            job.result()
            logger.info("done (job %s): %s", job.job_id, label)
        except (submitit.core.utils.FailedJobError, subprocess.CalledProcessError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            logger.info("FAILED (job %s): %s (%s; logs in %s)", job.job_id, label, first, log_dir)
            failed.append(label)
    return failed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queue", required=True, help="folder of queued runs (written by common.sh)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once on this machine")
    parser.add_argument("--gpus", default="", help="comma-separated GPU ids for the runs, round-robin")
    parser.add_argument("--submit", choices=["slurm", "local"], help="submit through submitit instead")
    parser.add_argument("--submit-opts", default="", help="submitit parameters KEY=VALUE ...")
    parser.add_argument("--log-dir", required=True, help="console output of each run goes here")
    parser.add_argument("--failed", required=True, help="labels of the failed runs are written here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[taskres] %(message)s", stream=sys.stderr)
    if args.jobs < 1:
        raise SystemExit(f"error: --jobs must be at least 1, got {args.jobs}")
    runs = read_queue(args.queue)
    gpus = [g for g in args.gpus.split(",") if g]
    if args.submit:
        failed = run_submitit(runs, args.submit, parse_submit_opts(args.submit_opts), args.log_dir)
    else:
        failed = run_local(runs, args.jobs, gpus, args.log_dir)
    with open(args.failed, "w") as f:
        f.writelines(label + "\n" for label in failed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
