"""Read test results from the log.txt of each seed folder and report mean and std.

CoOp-compatible command line and output:

    python parse_test_res.py output/<dataset>/TaskRes/<run>            # <run>/seed*/log.txt
    python parse_test_res.py <dir> --ci95          # 95% confidence interval instead of std
    python parse_test_res.py <dir> --test-log      # logs of --eval-only runs
    python parse_test_res.py <dir> --multi-exp     # <dir>/<exp>/seed*/log.txt, one summary each, then
                                                   # the average of experiments of the same setting

A log's result is the last `* accuracy: X%` (and `* error:`, `* macro_f1:`) line after the
end signal: `Finish training` for training logs, `=> result` for test-only logs, so the
validation results printed during training are never taken for the test result. When a
resumed run left its log in `log.txt-<timestamp>` (log.txt of the first attempt is kept),
the newest log holding a result wins. With --multi-exp, experiments are averaged only with others
of the same setting (their config.yaml minus seed, output folder and dataset); different settings
(regular vs enhanced base, 1 vs 2 shots, ...) each get their own average, never one number.

`scripts/summarize.py` uses `read_run` and `mean_std` from here.
"""
import argparse
import glob
import logging
import math
import os
import re
import sys

logger = logging.getLogger(__name__)

METRICS = (
    ("accuracy", re.compile(r"\* accuracy: ([\.\deE+-]+)%")),
    ("error", re.compile(r"\* error: ([\.\deE+-]+)%")),
    ("macro_f1", re.compile(r"\* macro_f1: ([\.\deE+-]+)%")),
)
# Dassl prints "Finish training"; CoOp's parser looks for "Finished training": take both.
TRAIN_END = re.compile(r"Finish(ed)? training")
TEST_START = re.compile(r"=> result")


class NoResultsError(Exception):
    """A folder that holds no finished run; the message names it and what was expected.

    Not an engine.errors.UserError on purpose: importing the engine package loads torch,
    which a log parser must not need (it runs in seconds on any python 3).
    """


def parse_log(path, test_log=False):
    """Metrics ({name: percent}) of the last result after the end signal, or {} if none."""
    end_signal = TEST_START if test_log else TRAIN_END
    good_to_go = False
    result = {}
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        for line in f:
            if end_signal.search(line):
                good_to_go = True
            if not good_to_go:
                continue
            for name, regex in METRICS:
                match = regex.search(line)
                if match:
                    try:
                        result[name] = float(match.group(1))
                    except ValueError:  # e.g. "* accuracy: -%": not a number, not a result
                        logger.warning("%s: unreadable %s value %r", path, name, match.group(1))
    return result


def log_files(run_dir):
    """log.txt and the timestamped logs of later attempts, newest first."""
    first = os.path.join(run_dir, "log.txt")
    later = sorted(glob.glob(glob.escape(first) + "-*"), reverse=True)  # timestamps sort by time
    return later + ([first] if os.path.isfile(first) else [])


def read_run(run_dir, test_log=False):
    """(log file, metrics) of the newest log in run_dir that holds a result, or (None, {})."""
    for path in log_files(run_dir):
        result = parse_log(path, test_log)
        if "accuracy" in result:
            return path, result
    return None, {}


def mean_std(values, ci95=False):
    """Mean and population std (numpy's default, as CoOp) or the 95% confidence interval."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / n)
    if ci95:
        return mean, 1.96 * std / math.sqrt(n)
    return mean, std


def subdirs(directory):
    return sorted(
        d for d in os.listdir(directory)
        if not d.startswith(".") and os.path.isdir(os.path.join(directory, d))
    )


# Keys that differ between experiments of one setting (where and on which dataset it ran, the seed);
# everything else in config.yaml is the setting. An enhanced base counts by kind, not by file name.
NOT_SETTING = ("OUTPUT_DIR", "RESUME", "SEED", "DATASET.ROOT", "DATASET.NAME", "DATASET.DATASET",
               "DATASET.ELEVATER_NAME", "FEATURE_CACHE.DIR", "MODEL.BACKBONE.CACHE_DIR")


def _flatten(node, prefix=""):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def experiment_setting(exp_dir):
    """What an experiment folder ran, from its runs' config.yaml (minus NOT_SETTING), as a hashable
    key; a folder without one is its own setting (its folder name), so it is never averaged with
    another: regular and enhanced bases, 1 and 2 shots are different settings."""
    for sub in subdirs(exp_dir):
        path = os.path.join(exp_dir, sub, "config.yaml")
        if not os.path.isfile(path):
            continue
        try:
            import yaml  # yacs' own dependency; imported here so the parser runs without it otherwise

            with open(path, encoding="utf-8") as f:
                config = yaml.safe_load(f) or {}
        except Exception as e:  # noqa: BLE001 - an unreadable config only loses the grouping
            logger.warning("cannot read %s (%s): %s is its own setting", path, e, exp_dir)
            break
        items = []
        for key, value in _flatten(config):
            if key in NOT_SETTING:
                continue
            if key.endswith("ENHANCED_BASE"):
                value = "none" if str(value).lower() in ("", "none") else "enhanced"
            items.append((key, repr(value)))
        return tuple(sorted(items))
    return ("folder", os.path.basename(os.path.normpath(exp_dir)))


def parse_directory(directory, test_log=False, ci95=False, out=sys.stdout):
    """Print each seed's result and the summary of one experiment; return {metric: mean}."""
    print(f"Parsing files in {directory}", file=out)
    per_metric = {}
    for sub in subdirs(directory):
        run_dir = os.path.join(directory, sub)
        if not log_files(run_dir):
            logger.warning("no log.txt in %s: skipped", run_dir)
            continue
        path, result = read_run(run_dir, test_log)
        if path is None:
            logger.warning("no result in %s/%s (unfinished run%s)", directory, sub,
                           "" if test_log else ", or an eval-only log: add --test-log")
            continue
        parts = [f"file: {path}"] + [f"{name}: {value:.2f}%" for name, value in result.items()]
        print(". ".join(parts) + ".", file=out)
        for name, value in result.items():
            per_metric.setdefault(name, []).append(value)
    if not per_metric:
        hint = "" if test_log else " (for logs of --eval-only runs add --test-log)"
        raise NoResultsError(f"Nothing found in {directory}: no <subfolder>/log.txt holds a finished "
                             f"result{hint}")

    means = {}
    print("===", file=out)
    print(f"Summary of directory: {directory}", file=out)
    for name, _ in METRICS:
        if name in per_metric:
            mean, spread = mean_std(per_metric[name], ci95)
            print(f"* {name}: {mean:.2f}% +- {spread:.2f}%", file=out)
            means[name] = mean
    print("===", file=out)
    return means


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", help="folder holding seed*/log.txt (or exp/seed*/ with --multi-exp)")
    parser.add_argument("--ci95", action="store_true", help="report the 95%% confidence interval instead of std")
    parser.add_argument("--test-log", action="store_true", help="parse logs of --eval-only runs")
    parser.add_argument("--multi-exp", action="store_true", help="parse every experiment folder in directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")

    if not os.path.isdir(args.directory):
        print(f"error: {args.directory} is not a folder; pass the folder that holds the seed*/ folders",
              file=sys.stderr)
        return 1
    try:
        if not args.multi_exp:
            parse_directory(args.directory, args.test_log, args.ci95)
            return 0
        groups = {}  # setting -> [(experiment, {metric: mean})], in folder order
        for exp in subdirs(args.directory):
            exp_dir = os.path.join(args.directory, exp)
            try:
                means = parse_directory(exp_dir, args.test_log, args.ci95)
            except NoResultsError as e:
                logger.warning("%s", e)
                continue
            groups.setdefault(experiment_setting(exp_dir), []).append((exp, means))
        if not groups:
            raise NoResultsError(f"Nothing found in any experiment folder of {args.directory}")
        if len(groups) > 1:
            print(f"{len(groups)} different settings among the experiments: each is averaged on its own, "
                  "never together")
        for members in groups.values():
            names = [exp for exp, _ in members]
            print("Average performance" if len(groups) == 1 else f"Average performance of {', '.join(names)}")
            for name, _ in METRICS:
                values = [means[name] for _, means in members if name in means]
                if values:
                    print(f"* {name}: {sum(values) / len(values):.2f}%")
        return 0
    except NoResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
