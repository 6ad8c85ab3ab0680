"""Aggregate the results of the TaskRes workflows and of compare.sh into tables and plots.

    python scripts/summarize.py output [--out DIR] [--backbone rn50] [--ci95]

Reads every run folder's run.json (written by train.py for each run: trainer, method variant,
label, dataset, shots, seed, provenance) and its results_*.json, wherever it lies under the root;
no folder name or log is parsed for them. A run folder of an older version, without run.json, is
read as before from the layout of train_regular.sh, train_enhance.sh, test_dg.sh and
scripts/taskres/zeroshot.sh, with a warning:

    <root>/<dataset>/TaskRes/<cfg>_<tag>_<regular|enhanced>-base_alpha<a>[_views<V>]_<K>shots/seed<S>/log.txt
    <root>/<dataset>/ZeroshotCLIP/<tag>/log.txt
    <root>/dg/<target>/TaskRes/<run folder name>/seed<S>/log.txt

and the other methods of compare.sh (CoOp, CoCoOp, LinearProbe, CLIP_Adapter, TipAdapter(F)):

    <root>/<dataset>/<Trainer>/<cfg>_<tag>[_nctx.._csc.._ctp..][_views<V>]_<K>shots/seed<S>/log.txt
    <root>/<dataset>/ZeroshotCLIP2/<tag>/log.txt
    <root>/dg/<target>/<Trainer>/<run folder name>/seed<S>/log.txt
    <root>/base2new/{train_base,test_new}/<dataset>/<Trainer>/<run folder name>/seed<S>/log.txt

and writes into DIR (default: the root):
    summary.md, summary.csv   rows: dataset x method (ZeroshotCLIP, ..., TaskRes regular base,
                              TaskRes enhanced base, in the methods' declared order) plus "Average"
                              rows over the 11 datasets; columns: shots; cells "mean ± std
                              (n=seeds)", "-" when missing; summary.csv adds the provenance of the
                              row's runs: git_commit, weights_sha256, torch, device
    runs.csv                  every run folder found, numbers unformatted
    <dataset>.png, average.png accuracy vs shots (log2 axis, std band)
    comparison.png            the paper's figure: one panel per dataset plus the average panel
    dg.md, dg.csv             ImageNet (source) and its four variants, per method, with the source
                              runs' shot count
    base2new.md, base2new.csv base / new accuracy and their harmonic mean (when base2new runs exist)
    mvlpt.md, mvlpt.csv       MVLPT runs of scripts/mvlpt/ (MVLPT's read_record.py numbers): per
                              dataset (target, or the joined sources), prompt kind, config and
                              setting, test accuracy mean ± std over seeds (a source run's is the
                              average over its tasks); when any exist

Partial results are fine: missing cells are "-", unfinished seeds are left out (n says how
many seeds a cell holds).
"""
import argparse
import csv
import io
import json
import logging
import os
import re
import sys
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script from anywhere: parse_test_res lives at the top level
    sys.path.insert(0, ROOT)

from parse_test_res import NoResultsError, mean_std, read_run  # noqa: E402

logger = logging.getLogger(__name__)

# The 11 datasets of the few-shot benchmark (the Average row needs all of them).
BENCHMARK = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers",
             "food101", "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101")
DG_SOURCE = "imagenet"
DG_TARGETS = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")
ZS = "ZeroshotCLIP"
ZS2 = "ZeroshotCLIP2"
ZERO_SHOT = (ZS, ZS2)  # seedless, shotless runs: <dataset>/<method>/<tag>
# Labels and display order of the methods (the methods' declared protocols: run.json carries them;
# runs of an older version get them from the registered trainers). Methods without one follow by name.
LABELS, ORDER = {}, {}
PROVENANCE = ("git_commit", "weights_sha256", "torch", "device")
# legacy layout: TaskRes folders are parsed by RUN_RE; StrongBase makes bases; MVLPT has its own section
NOT_METHODS = ("TaskRes", "StrongBase", "MVLPT")
NOT_IN_TABLES = ("StrongBase", "MVLPT")  # run.json runs of these are not comparison rows
TASKRES_BASES = {"regular": "TaskRes", "enhanced": "TaskRes-enhanced"}  # legacy folder name -> method
RUN_RE = re.compile(r"^(?P<cfg>.+)_(?P<tag>[a-z0-9@._-]+)_(?P<base>regular|enhanced)-base"
                    r"_alpha(?P<alpha>[0-9.]+)(?:_views(?P<views>[0-9]+))?_(?P<shots>[0-9]+)shots$")
# compare.sh's folders of the other methods; the tag holds no "_", so the shortest cfg that
# leaves "<tag>[variant]_<K>shots" is the right split.
METHOD_RUN_RE = re.compile(r"^(?P<cfg>.+?)_(?P<tag>[a-z0-9@.-]+)"
                           r"(?P<variant>_nctx\d+_csc(?:True|False)_ctp(?:end|middle|front))?"
                           r"(?:_views(?P<views>[0-9]+))?_(?P<shots>[0-9]+)shots$")
SEED_RE = re.compile(r"^seed(\d+)$")


class NoOutputError(NoResultsError):
    """The output root is missing or holds no run of the known layout."""


@dataclass
class Run:
    """One run folder: its settings and the accuracy of each finished seed."""
    kind: str                 # "train" (few-shot), "zeroshot", "dg" (evaluation of a source run), "base", "new"
    dataset: str              # dataset trained/evaluated on (the target for "dg")
    method: str               # trainer and variant (ZeroshotCLIP, CoOp, TaskRes, TaskRes-enhanced, ...)
    tag: str                  # backbone tag, e.g. rn50
    path: str
    cfg: str = ""
    alpha: str = ""
    shots: int = 0            # 0 for zero-shot
    name: str = ""            # run folder name (TaskRes), shared by a source run and its DG runs
    views: int = 0            # FEATURE_CACHE.TRAIN_VIEWS when the folder names one (not the default), else 0
    seeds: dict = field(default_factory=dict)   # seed (0 when the run has none) -> accuracy
    standard: object = None   # run.json: the protocol's published setting; None: decide from the name
    source: str = ""          # an evaluation's trained run folder (run.json's model_dir without seed<S>)
    prov: dict = field(default_factory=dict)    # seed -> {git_commit, weights_sha256, torch, device}

    def stats(self, ci95=False):
        """(mean, std, n) over finished seeds, or None."""
        if not self.seeds:
            return None
        mean, spread = mean_std(list(self.seeds.values()), ci95)
        return mean, spread, len(self.seeds)


def _methods():
    """{method: scripts.plan.Method} of the registered trainers (their declared protocols)."""
    from scripts import plan

    plan.load_trainers(())
    return plan.comparison_methods()[0]


def _learn_labels(methods):
    """Labels and order of methods that no run.json named (runs of an older version)."""
    missing = [m for m in methods if m not in LABELS]
    if not missing:
        return
    known = _methods()
    for method in missing:
        entry = known.get(method)
        if entry is not None:
            from engine.protocol import label_of

            LABELS[method] = label_of(entry.cls, entry.variant)
            ORDER[method] = entry.protocol.order


def standard_cfg(dataset, shots, method="TaskRes", tag="rn50"):
    """The config a method's declared protocol publishes for (dataset, shots, backbone tag)."""
    from engine.protocol import config_rule_stem

    entry = _methods()[TASKRES_BASES.get(method, method)]
    return config_rule_stem(entry.protocol, dataset, shots, "vit_b16" if tag == "vitb16" else "rn50")


def standard_alpha(dataset):
    """TaskRes' declared alpha of a dataset (its protocol's extra["alpha"] rule)."""
    return float(_methods()["TaskRes"].alpha(dataset))


def _listdirs(path):
    if not os.path.isdir(path):
        return []
    return sorted(d for d in os.listdir(path)
                  if not d.startswith(".") and os.path.isdir(os.path.join(path, d)))


def _read_seeds(run_dir, test_log):
    """{seed: accuracy} of the finished seed*/ folders, or {0: accuracy} for a seedless run (a
    folder of an older version, without run.json; one with run.json is read by _run_json_runs)."""
    seeds = {}
    if os.path.isfile(os.path.join(run_dir, RUN_JSON)):
        return seeds
    for sub in _listdirs(run_dir):
        match = SEED_RE.match(sub)
        if match and not os.path.isfile(os.path.join(run_dir, sub, RUN_JSON)):
            _, result = read_run(os.path.join(run_dir, sub), test_log)
            if "accuracy" in result:
                seeds[int(match.group(1))] = result["accuracy"]
    if not seeds:
        _, result = read_run(run_dir, test_log)
        if "accuracy" in result:
            seeds[0] = result["accuracy"]
    return seeds


def _taskres_runs(folder, dataset, kind):
    runs = []
    for name in _listdirs(folder):
        match = RUN_RE.match(name)
        if not match:
            logger.info("not a TaskRes run folder name, skipped: %s", os.path.join(folder, name))
            continue
        path = os.path.join(folder, name)
        runs.append(Run(kind=kind, dataset=dataset, method=TASKRES_BASES[match["base"]], tag=match["tag"], path=path,
                        cfg=match["cfg"], alpha=match["alpha"], shots=int(match["shots"]), name=name,
                        views=int(match["views"] or 0),
                        seeds=_read_seeds(path, test_log=(kind == "dg"))))
    return runs


def _method_runs(folder, dataset, method, kind):
    """Runs of a compare.sh method (not TaskRes) in <...>/<dataset>/<method>/."""
    runs = []
    for name in _listdirs(folder):
        match = METHOD_RUN_RE.match(name)
        if not match:
            logger.info("not a run folder name of compare.sh, skipped: %s", os.path.join(folder, name))
            continue
        path = os.path.join(folder, name)
        runs.append(Run(kind=kind, dataset=dataset, method=method, tag=match["tag"], path=path,
                        cfg=match["cfg"], shots=int(match["shots"]), name=name, views=int(match["views"] or 0),
                        seeds=_read_seeds(path, test_log=(kind in ("dg", "new")))))
    return runs


def _base2new_runs(root):
    """base2new/train_base (kind "base": its final test is on the base classes) and
    base2new/test_new (kind "new")."""
    runs = []
    for stage, kind in (("train_base", "base"), ("test_new", "new")):
        top = os.path.join(root, "base2new", stage)
        for dataset in _listdirs(top):
            for method in _listdirs(os.path.join(top, dataset)):
                runs += _method_runs(os.path.join(top, dataset, method), dataset, method, kind)
    return runs


RUN_JSON = "run.json"


def _load_json(path):
    try:
        with open(path) as f:
            payload = json.load(f)
        return payload if isinstance(payload, dict) else None
    except (OSError, ValueError) as e:
        logger.warning("unreadable %s (%s): that run is left out", path, e)
        return None


def _accuracy(record, folder):
    """Test accuracy of a finished run: results_test.json (else the run.json's copy), or None."""
    results = _load_json(os.path.join(folder, "results_test.json")) if os.path.isfile(
        os.path.join(folder, "results_test.json")) else (record.get("results") or {}).get("test")
    value = (results or {}).get("accuracy")
    return float(value) if isinstance(value, (int, float)) else None


def _kind(record, seed):
    """train | zeroshot | dg | base | new, as the workflows run them."""
    if record.get("eval_only") and record.get("model_dir"):
        return "new" if record.get("subsample_classes") == "new" else "dg"
    if record.get("eval_only") and seed == 0:
        return "zeroshot"
    return "base" if record.get("subsample_classes") == "base" else "train"


def _json_seeds(run_dir):
    """{seed: accuracy} of the finished seed<S>/ folders of a run that hold run.json."""
    seeds = {}
    for sub in _listdirs(run_dir):
        match = SEED_RE.match(sub)
        record = _load_json(os.path.join(run_dir, sub, RUN_JSON)) if match and os.path.isfile(
            os.path.join(run_dir, sub, RUN_JSON)) else None
        if record and record.get("status", "finished") == "finished":
            accuracy = _accuracy(record, os.path.join(run_dir, sub))
            if accuracy is not None:
                seeds[int(match.group(1))] = accuracy
    return seeds


def _run_json_runs(root):
    """Runs of the folders holding run.json: one Run per run folder (its seed<S>/ folders, or the
    folder itself for a seedless run), grouped by (kind, dataset, method, backbone, folder)."""
    from engine.protocol import backbone_tag

    runs = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if RUN_JSON not in files:
            continue
        record = _load_json(os.path.join(folder, RUN_JSON))
        if record is None or record.get("trainer") in NOT_IN_TABLES:
            continue
        match = SEED_RE.match(os.path.basename(folder))
        run_dir, seed = (os.path.dirname(folder), int(match.group(1))) if match else (folder, 0)
        method = record.get("method") or record.get("trainer", "?")
        LABELS.setdefault(method, record.get("label") or method)
        ORDER.setdefault(method, int(record.get("order", 1000)))
        kind = _kind(record, seed)
        dataset = record.get("dataset_config") or record.get("dataset", "?")
        tag = backbone_tag(record.get("backbone", "") or "?")
        cfg = os.path.splitext(os.path.basename(record.get("config_file") or ""))[0]
        opts = record.get("opts") or []
        alpha = dict(zip(opts[::2], opts[1::2])).get("TRAINER.TaskRes.RESIDUAL_SCALE", "")
        views = (record.get("feature_cache") or {}).get("train_views", 0)
        source = os.path.dirname(record["model_dir"]) if record.get("model_dir") else ""
        key = (kind, dataset, method, tag, run_dir)
        run = runs.get(key)
        if run is None:
            run = runs[key] = Run(kind=kind, dataset=dataset, method=method, tag=tag, path=run_dir, cfg=cfg,
                                  alpha=str(alpha), shots=0 if kind == "zeroshot" else int(record.get("shots") or 0),
                                  name=os.path.basename(run_dir), views=0 if record.get("standard") else views,
                                  standard=bool(record.get("standard")), source=source)
        accuracy = _accuracy(record, folder) if record.get("status", "finished") == "finished" else None
        if accuracy is not None:
            run.seeds[seed] = accuracy
            run.prov[seed] = {k: record.get(k) for k in PROVENANCE}
    return list(runs.values())


def collect(root):
    """Every run folder under the output root, finished seeds read: run.json first, then the
    folders of an older version by their names."""
    if not os.path.isdir(root):
        raise NoOutputError(f"output root {root} does not exist; pass the folder the workflows wrote "
                            f"to (OUTPUT, default ./output)")
    runs = _run_json_runs(root)
    legacy = _legacy_runs(root)
    old = [r.path for r in legacy if r.seeds]
    if old:
        logger.warning("%d run folder(s) hold no run.json (written by an older version), e.g. %s: read from their "
                       "folder names and log.txt", len(old), old[0])
    _learn_labels({r.method for r in legacy})
    return runs + [r for r in legacy if r.seeds or not any(o.path == r.path for o in runs)]


def _legacy_runs(root):
    runs = []
    for dataset in _listdirs(root):
        if dataset == "dg":
            for target in _listdirs(os.path.join(root, "dg")):
                runs += _taskres_runs(os.path.join(root, "dg", target, "TaskRes"), target, "dg")
                for method in _listdirs(os.path.join(root, "dg", target)):
                    if method not in NOT_METHODS:
                        runs += _method_runs(os.path.join(root, "dg", target, method), target, method, "dg")
            continue
        if dataset == "base2new":
            runs += _base2new_runs(root)
            continue
        runs += _taskres_runs(os.path.join(root, dataset, "TaskRes"), dataset, "train")
        for method in _listdirs(os.path.join(root, dataset)):
            folder = os.path.join(root, dataset, method)
            if method in ZERO_SHOT:
                for tag in _listdirs(folder):
                    path = os.path.join(folder, tag)
                    runs.append(Run(kind="zeroshot", dataset=dataset, method=method, tag=tag, path=path,
                                    seeds=_read_seeds(path, test_log=True)))
            elif method not in NOT_METHODS:
                runs += _method_runs(folder, dataset, method, "train")
    return runs


def _pick(candidates, dataset, shots):
    """One run per table cell: the workflows' standard cfg and alpha when several exist."""
    if len(candidates) == 1:
        return candidates[0]
    finished = [r for r in candidates if r.seeds] or candidates
    for run in finished:
        if run.standard is not None:  # run.json says whether it is the protocol's published setting
            if run.standard:
                return run
            continue
        if run.views or run.cfg != standard_cfg(dataset, shots, run.method, run.tag):
            continue
        if not run.method.startswith("TaskRes") or _same_alpha(run.alpha, standard_alpha(dataset)):
            return run
    chosen = sorted(finished, key=lambda r: r.name)[0]
    logger.warning("%d runs for %s %d-shot %s; the table shows %s (all are in runs.csv)",
                   len(candidates), dataset, shots, chosen.method, chosen.path)
    return chosen


def _same_alpha(text, value):
    try:
        return abs(float(text) - value) < 1e-9
    except ValueError:
        return False


class Table:
    """Cells keyed by (dataset, method, tag, shots) -> Run, chosen among the run folders."""

    def __init__(self, runs, ci95=False):
        self.ci95 = ci95
        groups = {}
        for run in runs:
            if run.kind in ("train", "zeroshot"):
                groups.setdefault((run.dataset, run.method, run.tag, run.shots), []).append(run)
        self.cells = {key: _pick(group, key[0], key[3]) for key, group in groups.items()}
        self.tags = sorted({key[2] for key in self.cells})
        found = {key[0] for key in self.cells}
        # DG targets evaluated zero-shot belong to the DG table, not to the few-shot one.
        self.datasets = [d for d in BENCHMARK if d in found] + sorted(
            found - set(BENCHMARK) - set(DG_TARGETS))
        self.shots = sorted({key[3] for key in self.cells})

    def rows(self):
        """(method, tag) pairs present, in display order."""
        present = {(key[1], key[2]) for key in self.cells}
        return [(m, t) for m in method_order(m for m, _ in present) for t in self.tags if (m, t) in present]

    def label(self, method, tag):
        return method_label(method) + (f" [{tag}]" if len(self.tags) > 1 else "")

    def stats(self, dataset, method, tag, shots):
        run = self.cells.get((dataset, method, tag, shots))
        return run.stats(self.ci95) if run else None

    def average(self, method, tag, shots, require_all=True, datasets=BENCHMARK):
        """(mean over datasets, number of datasets), or None; require_all: all of them present."""
        means = [s[0] for s in (self.stats(d, method, tag, shots) for d in datasets) if s]
        if not means or (require_all and len(means) < len(datasets)):
            return None
        return sum(means) / len(means), len(means)


def method_order(methods):
    """The methods' declared order (the paper's legend order), then any other by name."""
    return sorted(set(methods), key=lambda m: (ORDER.get(m, 1000), m))


def method_label(method):
    return LABELS.get(method, method)


def fmt(stats):
    if stats is None:
        return "-"
    mean, spread, n = stats
    return f"{mean:.2f} ± {spread:.2f} (n={n})"


def fmt_avg(avg):
    return "-" if avg is None else f"{avg[0]:.2f} ({avg[1]} datasets)"


def shot_header(shots):
    return "zero-shot" if shots == 0 else f"{shots}-shot"


def summary_rows(table, provenance=False):
    """Rows of summary.md: [dataset, method, cell per shot count]; with ``provenance`` (summary.csv)
    also the row's runs' git_commit, weights_sha256, torch and device (distinct values joined)."""
    rows = []
    for dataset in table.datasets:
        for method, tag in table.rows():
            cells = [fmt(table.stats(dataset, method, tag, k)) for k in table.shots]
            if any(c != "-" for c in cells):
                runs = [table.cells.get((dataset, method, tag, k)) for k in table.shots]
                rows.append([dataset, table.label(method, tag)] + cells + (_provenance(runs) if provenance else []))
    for method, tag in table.rows():
        cells = [fmt_avg(table.average(method, tag, k)) for k in table.shots]
        if any(c != "-" for c in cells):
            runs = [r for (d, m, t, k), r in table.cells.items() if (m, t) == (method, tag) and d in BENCHMARK]
            rows.append(["Average", table.label(method, tag)] + cells + (_provenance(runs) if provenance else []))
    return rows


def _provenance(runs):
    """The distinct values of each provenance field over the finished seeds of ``runs`` ("" for runs of
    an older version, which recorded none)."""
    out = []
    for key in PROVENANCE:
        values = sorted({str(p.get(key)) for r in runs if r for p in r.prov.values() if p.get(key) is not None})
        out.append(" ".join(values))
    return out


def _csv_text(header, rows):
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_summary(table, out_dir, root):
    header = ["dataset", "method"] + [shot_header(k) for k in table.shots]
    rows = summary_rows(table)
    _write(os.path.join(out_dir, "summary.csv"), _csv_text(header + list(PROVENANCE), summary_rows(table, True)))

    spread = "95% confidence interval" if table.ci95 else "std"
    parts = [f"# TaskRes results: {root}", "",
             f"Test accuracy (%), mean ± {spread} over seeds (n = finished seeds); "
             "'-' = no finished run. Average: mean over the 11 datasets, shown only when all 11 "
             "have a result.", ""]
    if not rows:
        parts.append("No finished run found.")
    for dataset in table.datasets + ["Average"]:
        block = [r[1:] for r in rows if r[0] == dataset]
        if block:
            title = "Average over the 11 datasets" if dataset == "Average" else dataset
            parts += [f"## {title}", "", _md_table(header[1:], block), ""]
    _write(os.path.join(out_dir, "summary.md"), "\n".join(parts).rstrip() + "\n")


def write_runs(runs, out_dir, ci95):
    header = ["kind", "dataset", "method", "backbone", "cfg", "alpha", "shots", "n", "mean", "std",
              "seeds", "path"] + list(PROVENANCE)
    rows = []
    for run in sorted(runs, key=lambda r: (r.kind, r.dataset, r.method, r.tag, r.shots, r.name)):
        stats = run.stats(ci95)
        mean, spread, n = stats if stats else ("", "", 0)
        rows.append([run.kind, run.dataset, run.method, run.tag, run.cfg, run.alpha, run.shots, n,
                     f"{mean:.4f}" if stats else "", f"{spread:.4f}" if stats else "",
                     " ".join(str(s) for s in sorted(run.seeds)), run.path] + _provenance([run]))
    _write(os.path.join(out_dir, "runs.csv"), _csv_text(header, rows))


# Line styles and markers per series, so the lines stay apart in grey print.
STYLES = [("o", "-"), ("s", "--"), ("^", "-."), ("D", ":"), ("v", "-"), ("P", "--"), ("X", "-."),
          ("*", ":"), ("<", "-"), (">", "--"), ("h", "-.")]


# Zero-shot methods: grey flat lines told apart by marker and dash.
ZERO_SHOT_STYLES = [("*", ":"), ("x", (0, (6, 2))), ("+", "-.")]


def _draw(ax, series, title, xticks, styles=None):
    """series: [(label, [(shots, mean, std)])] on a log2 shot axis; a zero-shot method (one
    point at 0 shots) is a flat grey line with markers at the shot ticks, as it does not depend
    on the shot count. styles: label -> index, so a method looks the same in every panel."""
    import matplotlib.ticker as mticker

    styles = styles or {label: i for i, (label, _) in enumerate(series)}
    flat = sorted(label for label, points in series if [p[0] for p in points] == [0])
    for label, points in series:
        points = sorted(points)
        if [p[0] for p in points] == [0]:
            marker, dash = ZERO_SHOT_STYLES[flat.index(label) % len(ZERO_SHOT_STYLES)]
            xs = xticks or [1]
            ax.plot(xs, [points[0][1]] * len(xs), color="0.3", linewidth=1.2, linestyle=dash, marker=marker,
                    markersize=7, label=label)
            continue
        xs, ys, es = zip(*[p for p in points if p[0] > 0])
        marker, dash = STYLES[styles[label] % len(STYLES)]
        line, = ax.plot(xs, ys, markersize=5, linewidth=1.4, label=label, marker=marker, linestyle=dash)
        lows = [y - e for y, e in zip(ys, es)]
        highs = [y + e for y, e in zip(ys, es)]
        ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.15, linewidth=0)
    ax.set_xscale("log", base=2)
    if xticks:
        ax.set_xticks(xticks)
    ax.xaxis.set_major_formatter(mticker.FormatStrFormatter("%d"))
    ax.xaxis.set_minor_locator(mticker.NullLocator())
    ax.set_xlabel("shots per class (log2 scale)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)


def _plot(series, title, path, xticks, styles=None):
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    _draw(ax, series, title, xticks, styles)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _dataset_series(table, dataset):
    series = []
    for method, tag in table.rows():
        points = [(k, s[0], s[1]) for k in table.shots for s in [table.stats(dataset, method, tag, k)] if s]
        if points:
            series.append((table.label(method, tag), points))
    return series


def _average_series(table, pool):
    """Mean over the pool's datasets per shot count; the band is the std over seeds of the
    per-seed averages (seeds every dataset has), 0 when no seed is shared."""
    series, partial = [], False
    for method, tag in table.rows():
        points = []
        for k in table.shots:
            runs = [table.cells.get((d, method, tag, k)) for d in pool]
            runs = [r for r in runs if r and r.seeds]
            if not runs:
                continue
            partial |= len(runs) < len(pool)
            mean = sum(r.stats()[0] for r in runs) / len(runs)
            shared = set.intersection(*(set(r.seeds) for r in runs))
            spread = 0.0
            if len(shared) > 1:
                per_seed = [sum(r.seeds[s] for r in runs) / len(runs) for s in sorted(shared)]
                spread = mean_std(per_seed)[1]
            points.append((k, mean, spread))
        if points:
            series.append((table.label(method, tag), points))
    return series, partial


def write_plots(table, out_dir):
    """One PNG per dataset, average.png, and comparison.png with every panel side by side."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xticks = [k for k in table.shots if k > 0]
    # Colours follow the series order, so every panel lists the methods in the same order.
    styles = {table.label(m, t): i for i, (m, t) in enumerate(table.rows())}
    written, panels = [], []
    for dataset in table.datasets:
        series = _dataset_series(table, dataset)
        if series:
            path = os.path.join(out_dir, f"{dataset}.png")
            _plot(series, dataset, path, xticks, styles)
            written.append(path)
            panels.append((dataset, series))

    # Average over the benchmark datasets; a run on other datasets only (the demo) averages those.
    pool = tuple(d for d in table.datasets if d in BENCHMARK) or tuple(table.datasets)
    series, partial = _average_series(table, pool)
    partial |= pool != BENCHMARK
    if series:
        title = "Average over datasets"
        if partial:  # a debug run or an unfinished benchmark: say what the points average
            title = f"Average over {len(pool)} dataset(s) (partial)"
        path = os.path.join(out_dir, "average.png")
        _plot(series, title, path, xticks, styles)
        written.append(path)
        panels.append((title, series))

    if panels:
        cols = min(4, len(panels))
        rows = -(-len(panels) // cols)
        labels_count = len({label for _, series in panels for label, _ in series})
        legend_rows = -(-labels_count // 4)
        legend_in = 0.25 * legend_rows + 0.3  # inches under the panels for the shared legend
        height = 3.6 * rows + legend_in
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, height), squeeze=False)
        for ax, (title, series) in zip(axes.flat, panels):
            _draw(ax, series, title, xticks, styles)
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        # One legend for the figure: every panel uses the same label -> style mapping.
        handles, labels = {}, []
        for ax in axes.flat:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                if label not in handles:
                    handles[label] = handle
                    labels.append(label)
        fig.legend([handles[lb] for lb in labels], labels, loc="lower center",
                   ncol=min(len(labels), 4), fontsize=9, frameon=False)
        fig.tight_layout(rect=(0, legend_in / height, 1, 1))
        path = os.path.join(out_dir, "comparison.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def write_dg(runs, table, out_dir, ci95):
    """ImageNet source accuracy and the four targets, per method and backbone, with the source runs'
    shot count (an evaluation names its source run: run.json's model_dir, else the folder name)."""
    dg = [r for r in runs if r.kind == "dg"]
    sources = [r for r in runs if r.kind == "train" and r.dataset == DG_SOURCE]
    rows_out = []
    header = ["method", "shots", f"{DG_SOURCE} (source)"] + list(DG_TARGETS)
    tags = sorted({r.tag for r in dg} | {t for (d, m, t, k) in table.cells if d == DG_SOURCE} |
                  {r.tag for r in runs if r.kind == "zeroshot" and r.dataset in DG_TARGETS})
    multi = len(tags) > 1
    trained = {r.method for r in dg} | {m for (d, m, t, k) in table.cells if d == DG_SOURCE}
    always = {"TaskRes", "TaskRes-enhanced"}  # the paper's rows, "-" when missing
    _learn_labels(always - set(LABELS))
    for tag in tags or ["rn50"]:
        suffix = f" [{tag}]" if multi else ""
        for method in method_order(trained | set(ZERO_SHOT) | always):
            if method in ZERO_SHOT:
                zs = {r.dataset: r for r in runs if r.kind == "zeroshot" and r.method == method and r.tag == tag
                      and r.dataset in (DG_SOURCE,) + DG_TARGETS}
                if zs:
                    rows_out.append([method_label(method) + suffix, "zero-shot"] +
                                    [fmt(zs[d].stats(ci95)) if d in zs else "-" for d in (DG_SOURCE,) + DG_TARGETS])
                continue
            mine = [r for r in dg if r.method == method and r.tag == tag]
            by_source = {}
            for r in mine:  # the source run folder of each evaluation
                by_source.setdefault(r.source or r.name, []).append(r)
            source = None
            if by_source:
                def source_of(key):
                    found = [s for s in sources if s.method == method and (s.path == key or s.name == key)]
                    return found[0] if found else None

                # Prefer the published setting (16 shots, the protocol's config) when several were evaluated.
                keys = sorted(by_source)
                chosen = next((k for k in keys if source_of(k) and source_of(k).shots == 16 and
                               (source_of(k).standard or source_of(k).standard is None and source_of(k).cfg ==
                                standard_cfg(DG_SOURCE, 16, method, tag))), keys[0])
                if len(keys) > 1:
                    logger.warning("%d evaluated %s runs on the DG targets; dg.md shows %s", len(keys), method, chosen)
                source = source_of(chosen)
                targets = {r.dataset: r for r in by_source[chosen]}
                shots = source.shots if source else _shots_of(chosen)
            else:
                source = table.cells.get((DG_SOURCE, method, tag, 16))
                targets = {}
                shots = 16 if source else ""
            if not (method in always or source or targets):
                continue
            cells = [str(shots) if shots else "-", fmt(source.stats(ci95)) if source else "-"]
            cells += [fmt(targets[t].stats(ci95)) if t in targets else "-" for t in DG_TARGETS]
            rows_out.append([method_label(method) + suffix] + cells)
    _write(os.path.join(out_dir, "dg.csv"), _csv_text(header, rows_out))
    spread = "95% confidence interval" if ci95 else "std"
    text = ["# Domain generalization: ImageNet -> ImageNet-V2 / -Sketch / -A / -R", "",
            f"Test accuracy (%), mean ± {spread} over seeds (n = finished seeds); '-' = no finished run. "
            "Trained rows: the ImageNet runs evaluated by test_dg.sh / compare.sh, trained with the shots per "
            "class of the shots column (the published protocol: 16).", "",
            _md_table(header, rows_out), ""]
    _write(os.path.join(out_dir, "dg.md"), "\n".join(text))
    return rows_out


def _shots_of(name):
    """Shot count named by a source run folder (…_<K>shots), or "" (the source itself is not there)."""
    match = re.search(r"_([0-9]+)shots$", os.path.basename(name))
    return int(match.group(1)) if match else ""


def harmonic_mean(base, new):
    return 2 * base * new / (base + new) if base + new > 0 else 0.0


def write_base2new(runs, out_dir, ci95):
    """CoCoOp's base-to-new table: base accuracy (the train_base run's final test), new accuracy
    (its checkpoint on the new classes), harmonic mean of the two means; plus the average over
    the datasets that have both. Returns the rows, [] (and no file) without base2new runs."""
    cells = {}
    for run in runs:
        if run.kind in ("base", "new"):
            cells.setdefault((run.dataset, run.method, run.tag), {})[run.kind] = run
    if not cells:
        return []
    multi = len({key[2] for key in cells}) > 1
    datasets = [d for d in BENCHMARK if any(k[0] == d for k in cells)] + sorted(
        {k[0] for k in cells} - set(BENCHMARK))
    header = ["dataset", "method", "base", "new", "H"]
    rows, means = [], {}
    for dataset in datasets:
        for method in method_order(k[1] for k in cells if k[0] == dataset):
            for tag in sorted(k[2] for k in cells if k[:2] == (dataset, method)):
                pair = cells[(dataset, method, tag)]
                base = pair["base"].stats(ci95) if "base" in pair else None
                new = pair["new"].stats(ci95) if "new" in pair else None
                h = f"{harmonic_mean(base[0], new[0]):.2f}" if base and new else "-"
                label = method_label(method) + (f" [{tag}]" if multi else "")
                rows.append([dataset, label, fmt(base), fmt(new), h])
                if base and new:
                    means.setdefault(label, []).append((base[0], new[0]))
    for label, pairs in means.items():
        b = sum(p[0] for p in pairs) / len(pairs)
        n = sum(p[1] for p in pairs) / len(pairs)
        rows.append([f"Average ({len(pairs)} datasets)", label, f"{b:.2f}", f"{n:.2f}", f"{harmonic_mean(b, n):.2f}"])
    _write(os.path.join(out_dir, "base2new.csv"), _csv_text(header, rows))
    spread = "95% confidence interval" if ci95 else "std"
    text = ["# Base-to-new generalization (CoCoOp's protocol)", "",
            f"Trained on the base half of the classes (16 shots), tested on base and on new classes; "
            f"mean ± {spread} over seeds; H = harmonic mean of the base and new means.", "",
            _md_table(header, rows), ""]
    _write(os.path.join(out_dir, "base2new.md"), "\n".join(text))
    return rows


# ---- MVLPT (scripts/mvlpt/) ------------------------------------------------------------------
# <root>/<Dataset or Dataset,Dataset,...>/MVLPT/<KIND>/<cfg>_<K>shots/<setting>/seed<S>/log.txt
MVLPT_CFG_RE = re.compile(r"^(?P<cfg>.+)_(?P<shots>\d+)shots$")


@dataclass
class MvlptRun:
    dataset: str  # the target, or the comma-joined sources of a source run
    kind: str  # CoOp | VPT | UPT
    cfg: str
    shots: int
    setting: str  # nctx<N>_cscFalse_ctpmiddle[_init-<src>]
    seeds: dict  # seed -> accuracy

    @property
    def role(self):
        return "source" if "," in self.dataset or "_init-" not in self.setting else "target"


def collect_mvlpt(root):
    """Every MVLPT run folder under the output root, finished seeds read."""
    runs = []
    for dataset in _listdirs(root):
        top = os.path.join(root, dataset, "MVLPT")
        for kind in _listdirs(top):
            for cfg_shots in _listdirs(os.path.join(top, kind)):
                match = MVLPT_CFG_RE.match(cfg_shots)
                if not match:
                    logger.info("not an MVLPT <cfg>_<K>shots folder, skipped: %s", os.path.join(top, kind, cfg_shots))
                    continue
                for setting in _listdirs(os.path.join(top, kind, cfg_shots)):
                    path = os.path.join(top, kind, cfg_shots, setting)
                    seeds = {**_read_seeds(path, test_log=False), **_json_seeds(path)}
                    seeds.pop(0, None)  # a seed-averaged prompt's folder holds no test of its own
                    if seeds:
                        runs.append(MvlptRun(dataset, kind, match["cfg"], int(match["shots"]), setting, seeds))
    return runs


def write_mvlpt(root, out_dir, ci95):
    """mvlpt.md / mvlpt.csv: one row per MVLPT setting, test accuracy mean ± std over seeds."""
    runs = sorted(collect_mvlpt(root), key=lambda r: (r.role != "target", r.dataset, r.kind, r.cfg, r.shots,
                                                      r.setting))
    if not runs:
        return []
    os.makedirs(out_dir, exist_ok=True)
    header = ["dataset", "role", "kind", "cfg", "shots", "setting", "accuracy", "mean", "std", "n", "seeds"]
    rows = []
    for run in runs:
        values = [run.seeds[s] for s in sorted(run.seeds)]
        mean, spread = mean_std(values, ci95)
        rows.append([run.dataset, run.role, run.kind, run.cfg, str(run.shots), run.setting,
                     f"{mean:.2f} ± {spread:.2f} (n={len(values)})", f"{mean:.4f}", f"{spread:.4f}",
                     str(len(values)), " ".join(f"{s}:{run.seeds[s]:.2f}" for s in sorted(run.seeds))])
    spread_name = "95% CI" if ci95 else "std"
    md = (f"# MVLPT runs (test accuracy, mean ± {spread_name} over seeds)\n\n"
          + _md_table(header[:7] + ["seeds"], [r[:7] + [r[10]] for r in rows]))
    _write(os.path.join(out_dir, "mvlpt.md"), md)
    _write(os.path.join(out_dir, "mvlpt.csv"), _csv_text(header, rows))
    return [os.path.join(out_dir, "mvlpt.md"), os.path.join(out_dir, "mvlpt.csv")]


def _write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)  # a reader never sees half a table


def summarize(root, out_dir=None, backbone=None, ci95=False):
    """Write every table and plot; return the paths written."""
    runs = collect(root)
    if backbone:
        runs = [r for r in runs if r.tag == backbone]
    mvlpt = write_mvlpt(root, out_dir or root, ci95) if not backbone else []
    if mvlpt and not runs:  # an output root of MVLPT runs only
        return mvlpt
    if not runs:
        raise NoOutputError(f"no run folders under {root}"
                            + (f" for backbone tag '{backbone}'" if backbone else "")
                            + "; expected <dataset>/TaskRes/<run>/seed<S>/log.txt as the workflows write")
    out_dir = out_dir or root
    os.makedirs(out_dir, exist_ok=True)
    table = Table(runs, ci95)
    write_summary(table, out_dir, root)
    write_runs(runs, out_dir, ci95)
    write_dg(runs, table, out_dir, ci95)
    written = [os.path.join(out_dir, f) for f in ("summary.md", "summary.csv", "runs.csv", "dg.md", "dg.csv")]
    if write_base2new(runs, out_dir, ci95):
        written += [os.path.join(out_dir, "base2new.md"), os.path.join(out_dir, "base2new.csv")]
    written += write_plots(table, out_dir)
    return written + mvlpt


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="output root of the workflows (OUTPUT, default ./output)")
    parser.add_argument("--out", help="folder for the tables and plots (default: the output root)")
    parser.add_argument("--backbone", help="only runs of this backbone tag, e.g. rn50 or vitb16")
    parser.add_argument("--ci95", action="store_true", help="95%% confidence interval instead of std")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        written = summarize(args.root, args.out, args.backbone, args.ci95)
    except NoResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
