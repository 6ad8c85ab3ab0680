"""Aggregate the results of the TaskRes workflows into tables and plots.

    python scripts/summarize.py output [--out DIR] [--backbone rn50] [--ci95]

Walks the output root laid out by train_regular.sh, train_enhance.sh, test_dg.sh and
scripts/taskres/zeroshot.sh:

    <root>/<dataset>/TaskRes/<cfg>_<tag>_<regular|enhanced>-base_alpha<a>_<K>shots/seed<S>/log.txt
    <root>/<dataset>/ZeroshotCLIP/<tag>/log.txt
    <root>/dg/<target>/TaskRes/<run folder name>/seed<S>/log.txt

and writes into DIR (default: the root):
    summary.md, summary.csv   rows: dataset x method (ZeroshotCLIP, TaskRes regular base,
                              TaskRes enhanced base) plus "Average" rows over the 11 datasets;
                              columns: shots; cells "mean ± std (n=seeds)", "-" when missing
    runs.csv                  every run folder found, numbers unformatted
    <dataset>.png, average.png accuracy vs shots
    dg.md, dg.csv             ImageNet (source) and its four variants, per method

Partial results are fine: missing cells are "-", unfinished seeds are left out (n says how
many seeds a cell holds).
"""
import argparse
import csv
import io
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
METHODS = (ZS, "regular", "enhanced")
METHOD_LABELS = {ZS: "ZeroshotCLIP", "regular": "TaskRes (regular base)",
                 "enhanced": "TaskRes (enhanced base)"}
RUN_RE = re.compile(r"^(?P<cfg>.+)_(?P<tag>[a-z0-9@._-]+)_(?P<base>regular|enhanced)-base"
                    r"_alpha(?P<alpha>[0-9.]+)_(?P<shots>[0-9]+)shots$")
SEED_RE = re.compile(r"^seed(\d+)$")


class NoOutputError(NoResultsError):
    """The output root is missing or holds no run of the known layout."""


@dataclass
class Run:
    """One run folder: its settings and the accuracy of each finished seed."""
    kind: str                 # "train" (few-shot), "zeroshot", or "dg" (evaluation of a source run)
    dataset: str              # dataset trained/evaluated on (the target for "dg")
    method: str               # ZeroshotCLIP, regular or enhanced
    tag: str                  # backbone tag, e.g. rn50
    path: str
    cfg: str = ""
    alpha: str = ""
    shots: int = 0            # 0 for zero-shot
    name: str = ""            # run folder name (TaskRes), shared by a source run and its DG runs
    seeds: dict = field(default_factory=dict)   # seed (0 when the run has none) -> accuracy

    def stats(self, ci95=False):
        """(mean, std, n) over finished seeds, or None."""
        if not self.seeds:
            return None
        mean, spread = mean_std(list(self.seeds.values()), ci95)
        return mean, spread, len(self.seeds)


def standard_cfg(dataset, shots):
    """The config the published workflows use (keep in step with scripts/taskres/common.sh)."""
    lr = "2e-4" if dataset == "imagenet" else "2e-3"
    return f"adam_lr{lr}_B256_ep{100 if shots <= 4 else 200}"


def standard_alpha(dataset):
    return 1.0 if dataset == "oxford_flowers" else 0.5


def _listdirs(path):
    if not os.path.isdir(path):
        return []
    return sorted(d for d in os.listdir(path)
                  if not d.startswith(".") and os.path.isdir(os.path.join(path, d)))


def _read_seeds(run_dir, test_log):
    """{seed: accuracy} of the finished seed*/ folders, or {0: accuracy} for a seedless run."""
    seeds = {}
    for sub in _listdirs(run_dir):
        match = SEED_RE.match(sub)
        if match:
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
        runs.append(Run(kind=kind, dataset=dataset, method=match["base"], tag=match["tag"], path=path,
                        cfg=match["cfg"], alpha=match["alpha"], shots=int(match["shots"]), name=name,
                        seeds=_read_seeds(path, test_log=(kind == "dg"))))
    return runs


def collect(root):
    """Every run folder under the output root, finished seeds read."""
    if not os.path.isdir(root):
        raise NoOutputError(f"output root {root} does not exist; pass the folder the workflows wrote "
                            f"to (OUTPUT, default ./output)")
    runs = []
    for dataset in _listdirs(root):
        if dataset == "dg":
            for target in _listdirs(os.path.join(root, "dg")):
                runs += _taskres_runs(os.path.join(root, "dg", target, "TaskRes"), target, "dg")
            continue
        runs += _taskres_runs(os.path.join(root, dataset, "TaskRes"), dataset, "train")
        zs_dir = os.path.join(root, dataset, ZS)
        for tag in _listdirs(zs_dir):
            path = os.path.join(zs_dir, tag)
            runs.append(Run(kind="zeroshot", dataset=dataset, method=ZS, tag=tag, path=path,
                            seeds=_read_seeds(path, test_log=True)))
    return runs


def _pick(candidates, dataset, shots):
    """One run per table cell: the workflows' standard cfg and alpha when several exist."""
    if len(candidates) == 1:
        return candidates[0]
    finished = [r for r in candidates if r.seeds] or candidates
    for run in finished:
        if run.cfg == standard_cfg(dataset, shots) and _same_alpha(run.alpha, standard_alpha(dataset)):
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
        return [(m, t) for m in METHODS for t in self.tags if (m, t) in present]

    def label(self, method, tag):
        return METHOD_LABELS[method] + (f" [{tag}]" if len(self.tags) > 1 else "")

    def stats(self, dataset, method, tag, shots):
        run = self.cells.get((dataset, method, tag, shots))
        return run.stats(self.ci95) if run else None

    def average(self, method, tag, shots, require_all=True, datasets=BENCHMARK):
        """(mean over datasets, number of datasets), or None; require_all: all of them present."""
        means = [s[0] for s in (self.stats(d, method, tag, shots) for d in datasets) if s]
        if not means or (require_all and len(means) < len(datasets)):
            return None
        return sum(means) / len(means), len(means)


def fmt(stats):
    if stats is None:
        return "-"
    mean, spread, n = stats
    return f"{mean:.2f} ± {spread:.2f} (n={n})"


def fmt_avg(avg):
    return "-" if avg is None else f"{avg[0]:.2f} ({avg[1]} datasets)"


def shot_header(shots):
    return "zero-shot" if shots == 0 else f"{shots}-shot"


def summary_rows(table):
    """Rows of summary.csv / summary.md: [dataset, method, cell per shot count]."""
    rows = []
    for dataset in table.datasets:
        for method, tag in table.rows():
            cells = [fmt(table.stats(dataset, method, tag, k)) for k in table.shots]
            if any(c != "-" for c in cells):
                rows.append([dataset, table.label(method, tag)] + cells)
    for method, tag in table.rows():
        cells = [fmt_avg(table.average(method, tag, k)) for k in table.shots]
        if any(c != "-" for c in cells):
            rows.append(["Average", table.label(method, tag)] + cells)
    return rows


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
    _write(os.path.join(out_dir, "summary.csv"), _csv_text(header, rows))

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
              "seeds", "path"]
    rows = []
    for run in sorted(runs, key=lambda r: (r.kind, r.dataset, r.method, r.tag, r.shots, r.name)):
        stats = run.stats(ci95)
        mean, spread, n = stats if stats else ("", "", 0)
        rows.append([run.kind, run.dataset, run.method, run.tag, run.cfg, run.alpha, run.shots, n,
                     f"{mean:.4f}" if stats else "", f"{spread:.4f}" if stats else "",
                     " ".join(str(s) for s in sorted(run.seeds)), run.path])
    _write(os.path.join(out_dir, "runs.csv"), _csv_text(header, rows))


def _plot(series, title, path):
    """series: [(label, [(shots, mean, std)])]; zero-shot points are drawn as a star at 0."""
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    ticks = set()
    for label, points in series:
        points = sorted(points)
        ticks.update(p[0] for p in points)
        xs, ys, es = zip(*points)
        if len(points) == 1 and xs[0] == 0:
            ax.plot(xs, ys, marker="*", markersize=12, linestyle="none", label=label)
            ax.axhline(ys[0], linestyle=":", linewidth=1, color=ax.lines[-1].get_color())
        else:
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=label)
    ax.set_xticks(sorted(ticks))
    ax.set_xlabel("shots per class")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_plots(table, out_dir):
    written = []
    for dataset in table.datasets:
        series = []
        for method, tag in table.rows():
            points = [(k, s[0], s[1]) for k in table.shots
                      for s in [table.stats(dataset, method, tag, k)] if s]
            if points:
                series.append((table.label(method, tag), points))
        if series:
            path = os.path.join(out_dir, f"{dataset}.png")
            _plot(series, dataset, path)
            written.append(path)

    # Average over the benchmark datasets; a run on other datasets only (the demo) averages those.
    pool = tuple(d for d in table.datasets if d in BENCHMARK) or tuple(table.datasets)
    series, partial = [], pool != BENCHMARK
    for method, tag in table.rows():
        points = []
        for k in table.shots:
            avg = table.average(method, tag, k, require_all=False, datasets=pool)
            if avg:
                points.append((k, avg[0], 0.0))
                partial |= avg[1] < len(pool)
        if points:
            series.append((table.label(method, tag), points))
    if series:
        title = "Average over datasets"
        if partial:  # a debug run or an unfinished benchmark: say what the points average
            title = f"Average over {len(pool)} dataset(s) (partial)"
        path = os.path.join(out_dir, "average.png")
        _plot(series, title, path)
        written.append(path)
    return written


def write_dg(runs, table, out_dir, ci95):
    """ImageNet source accuracy and the four targets, per method and backbone."""
    dg = [r for r in runs if r.kind == "dg"]
    sources = {r.path: r for r in runs if r.kind == "train" and r.dataset == DG_SOURCE}
    rows_out = []
    header = ["method", f"{DG_SOURCE} (source)"] + list(DG_TARGETS)
    tags = sorted({r.tag for r in dg} | {t for (d, m, t, k) in table.cells if d == DG_SOURCE} |
                  {r.tag for r in runs if r.kind == "zeroshot" and r.dataset in DG_TARGETS})
    multi = len(tags) > 1
    for tag in tags or ["rn50"]:
        suffix = f" [{tag}]" if multi else ""
        zs = {r.dataset: r for r in runs if r.kind == "zeroshot" and r.method == ZS and r.tag == tag
              and r.dataset in (DG_SOURCE,) + DG_TARGETS}
        if zs:
            rows_out.append([METHOD_LABELS[ZS] + suffix] +
                            [fmt(zs[d].stats(ci95)) if d in zs else "-" for d in (DG_SOURCE,) + DG_TARGETS])
        for base in ("regular", "enhanced"):
            mine = [r for r in dg if r.method == base and r.tag == tag]
            names = sorted({r.name for r in mine})
            if names:
                # Prefer the published setting (16 shots, standard cfg) when several were evaluated.
                name = next((n for n in names if RUN_RE.match(n)["shots"] == "16"
                             and RUN_RE.match(n)["cfg"] == standard_cfg(DG_SOURCE, 16)), names[0])
                if len(names) > 1:
                    logger.warning("%d evaluated %s runs on the DG targets; dg.md shows %s", len(names),
                                   base, name)
                source = next((r for r in sources.values() if r.name == name), None)
                targets = {r.dataset: r for r in mine if r.name == name}
            else:
                source = table.cells.get((DG_SOURCE, base, tag, 16))
                targets = {}
            cells = [fmt(source.stats(ci95)) if source else "-"]
            cells += [fmt(targets[t].stats(ci95)) if t in targets else "-" for t in DG_TARGETS]
            rows_out.append([METHOD_LABELS[base] + suffix] + cells)
    _write(os.path.join(out_dir, "dg.csv"), _csv_text(header, rows_out))
    spread = "95% confidence interval" if ci95 else "std"
    text = ["# Domain generalization: ImageNet -> ImageNet-V2 / -Sketch / -A / -R", "",
            f"Test accuracy (%), mean ± {spread} over seeds (n = finished seeds); '-' = no finished run. "
            "TaskRes rows: the 16-shot ImageNet runs evaluated by test_dg.sh.", "",
            _md_table(header, rows_out), ""]
    _write(os.path.join(out_dir, "dg.md"), "\n".join(text))
    return rows_out


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
    written += write_plots(table, out_dir)
    return written


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
