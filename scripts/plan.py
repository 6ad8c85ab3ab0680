"""The experiment planner: a workflow's options -> the list of train.py runs it needs -> the runner.

    python scripts/plan.py compare [options] [-- KEY VALUE ...]      (what compare.sh runs)
    python scripts/plan.py regular|enhance|dg|zeroshot|strong_base|main|eval|mvlpt_mt|mvlpt_single
                          |mvlpt_mt_elevater|mvlpt_single_elevater ...

The bash entry points (compare.sh, train_regular.sh, train_enhance.sh, test_dg.sh,
scripts/taskres/*.sh, scripts/mvlpt/*.sh) only call this with their name. Every rule comes from
the methods' declared protocols (``protocol = Protocol(...)`` in each trainer class, see
engine/protocol.py): their configs per (dataset, shots, backbone family), variants, producers
(``needs``) and evaluations. The planner turns (methods x datasets x shots x seeds x protocols)
into run records (``run_jobs.Run``: label, argv, output folder, stage, what must exist first);
scripts/run_jobs.py runs them in order, side by side (--jobs/--gpus) or on Slurm (--submit), with
a barrier between stages. Finished runs (results_test.json present) are skipped here; unfinished
ones run again and resume.

Folders (the published layout, shared with scripts/summarize.py):
  <OUTPUT>/<dataset>/<Trainer>/<cfg>_<tag><variant folder>[_views<V>]_<K>shots/seed<S>
  <OUTPUT>/<dataset>/<zero-shot trainer>/<tag>
  <OUTPUT>/<dataset>/StrongBase/<tag>_<K>shots/seed1   (its file: <STRONG_BASE>/<DatasetClass>/<tag>_<K>shots/model.pth.tar)
  <OUTPUT>/dg/<target>/<Trainer>/<source run folder>/seed<S>
  <OUTPUT>/base2new/{train_base,test_new}/<dataset>/<Trainer>/<run folder>/seed<S>
where tag is the backbone name lower-cased without "/", "-" and "@" (ViT-B/16 -> vitb16).
"""
import hashlib
import logging
import os
import re
import shutil
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from engine.protocol import backbone_tag, family_of  # noqa: E402, F401 - the strong_base/ writers' tag rule
from scripts import run_jobs  # noqa: E402
from scripts.run_jobs import Run  # noqa: E402

logger = logging.getLogger("plan")

# The 11 few-shot datasets, in the order of the original scripts.
BENCHMARK = ("stanford_cars", "oxford_flowers", "caltech101", "dtd", "fgvc_aircraft", "oxford_pets", "food101",
             "ucf101", "eurosat", "sun397", "imagenet")
ALL_SHOTS = (1, 2, 4, 8, 16)
ALL_SEEDS = (1, 2, 3)
DG_SOURCE = "imagenet"
DG_SHOTS = 16
DG_TARGETS = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")
KNOWN_DATASETS = BENCHMARK + DG_TARGETS + ("fashion_mnist", "image_folder")
B2N_SHOTS = 16
PROTOCOLS = ("fewshot", "dg", "base2new")
COMPARE_BACKBONE = "RN50"  # the paper's; one backbone for every method of a comparison
DATA_PLACEHOLDER = "<DATA>"  # --dry-run without DATA: the commands show where the root goes


class PlanError(Exception):
    """Bad input to a workflow: one sentence, exit 2."""


# ---- small rules ------------------------------------------------------------------------------

_yaml_cache = {}


def read_yaml(path):
    if path not in _yaml_cache:
        with open(os.path.join(ROOT, path)) as f:
            _yaml_cache[path] = yaml.safe_load(f) or {}
    return _yaml_cache[path]


def yaml_key(path, *keys):
    node = read_yaml(path)
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def dataset_class(dataset):
    """Dataset config name -> its class name (DATASET.NAME of configs/datasets/<name>.yaml)."""
    return yaml_key(f"configs/datasets/{dataset}.yaml", "DATASET", "NAME")


def views_suffix(extra_opts):
    """"_views<V>" when FEATURE_CACHE.TRAIN_VIEWS is passed with a value other than the default:
    V changes the numbers, so such a run must not share, or be skipped as, the default run's folder."""
    from engine.config import get_cfg_default

    for key, value in zip(extra_opts[::2], extra_opts[1::2]):
        if key == "FEATURE_CACHE.TRAIN_VIEWS":
            return "" if value == str(get_cfg_default().FEATURE_CACHE.TRAIN_VIEWS) else f"_views{value}"
    return ""


def extra_max_epoch(extra_opts):
    for key, value in zip(extra_opts[::2], extra_opts[1::2]):
        if key == "OPTIM.MAX_EPOCH":
            return value
    return None


def max_epoch(config_file, extra_opts, load_epoch=None):
    """Epoch whose checkpoint an evaluation loads: --load-epoch, else OPTIM.MAX_EPOCH after --, else
    MAX_EPOCH of the config file, else the _ep<N> of its name; None when none tells."""
    if load_epoch:
        return str(load_epoch)
    value = extra_max_epoch(extra_opts)
    if value is not None:
        return value
    if os.path.isfile(os.path.join(ROOT, config_file)):
        epochs = yaml_key(config_file, "OPTIM", "MAX_EPOCH")
        if epochs is not None:
            return str(epochs)
    match = re.search(r"_ep([0-9]+)", os.path.basename(config_file))
    return match.group(1) if match else None


def finished(folder):
    return os.path.isfile(os.path.join(folder, "results_test.json"))


# ---- methods and their declared protocols -----------------------------------------------------

class Method:
    """One comparison method on the CLI: a trainer and one variant of its protocol."""

    def __init__(self, name, cls, variant):
        from engine.protocol import protocol_of

        self.name, self.cls, self.variant = name, cls, variant
        self.trainer = cls.__name__
        self.protocol = protocol_of(cls)

    def config_dir(self):
        """Where its yaml files live: configs/<Trainer>/ beside a trainer file outside the checkout,
        else configs/trainers/<config_dir or Trainer>/ (paths relative to the repository root)."""
        from engine.listing import config_folder

        folder = config_folder(self.cls)
        return os.path.relpath(folder, ROOT) if folder.startswith(os.path.join(ROOT, "")) else folder

    def config_stem(self, dataset, shots, family):
        rule = self.protocol.config
        if callable(rule):
            return rule(dataset, shots, family)
        if rule:
            return rule
        folder = os.path.join(ROOT, self.config_dir())
        names = sorted(n[:-5] for n in os.listdir(folder) if n.endswith(".yaml")) if os.path.isdir(folder) else []
        if len(names) != 1:
            raise PlanError(f"trainer {self.trainer} declares no config rule and its config folder {self.config_dir()} "
                            f"holds {len(names)} yaml files ({' '.join(names) or 'none'}); keep one there, or declare "
                            f"protocol = Protocol(config=...) in its class")
        return names[0]

    def config_file(self, dataset, shots, family):
        return f"{self.config_dir()}/{self.config_stem(dataset, shots, family)}.yaml"

    def alpha(self, dataset):
        rule = self.protocol.extra.get("alpha")
        return rule(dataset) if rule else ""


def comparison_methods():
    """{CLI name: Method} of every registered trainer, in the default order (declared ones first)."""
    from engine import TRAINER_REGISTRY
    from engine.protocol import declared_protocol, protocol_of

    entries = []
    for name, cls in TRAINER_REGISTRY:
        protocol = protocol_of(cls)
        for variant in protocol.variants:
            cli = f"{name}-{variant.name}" if variant.name else name
            declared = declared_protocol(cls) is not None and protocol.default_grid
            entries.append((0 if declared else 1, protocol.order, cli, Method(cli, cls, variant), declared))
    entries.sort(key=lambda e: e[:3])
    return {cli: method for _, _, cli, method, _ in entries}, [cli for _, _, cli, _, d in entries if d]


def config_file(trainer, dataset, shots, backbone=COMPARE_BACKBONE):
    """The trainer config (a path relative to the repository) of a comparison run of ``trainer``,
    from its declared protocol."""
    load_trainers(())
    return comparison_methods()[0][trainer].config_file(dataset, shots, family_of(backbone))


def load_trainers(dirs):
    """Register our trainers and those of --trainer-dir / $TASKRES_TRAINER_DIRS (train.py's setup)."""
    from engine.launch import load_trainer_folders

    load_trainer_folders(dirs)


# ---- options ----------------------------------------------------------------------------------

class Options:
    """A workflow's command line: the shared options of every script, checked as the scripts did."""

    VALUE_OPTIONS = ("datasets", "shots", "seeds", "targets", "bases", "backbone", "jobs", "gpus", "submit",
                     "submit-opts", "cfg", "eval-cfg", "alpha", "load-epoch", "root", "output",
                     "strong-base-root", "strong-base-opts", "methods", "protocols", "trainer-dir",
                     "enhanced-base", "sources", "elevater-sources", "source-shots", "model-dir")

    def __init__(self, script, allowed, argv, usage, env=None, own_datasets=False):
        env = os.environ if env is None else env
        self.script, self.usage = script, usage
        self.own_datasets = own_datasets  # --datasets are not CoOp dataset names: the planner checks them
        self.values, self.positional, self.extra_opts = {}, [], []
        self.dry_run = self.scratch = False
        self.trainer_dirs = []
        self._parse(set(allowed.split()), list(argv))
        self._check(env)

    def die(self, message):
        raise PlanError(message)

    def _parse(self, allowed, argv):
        while argv:
            opt = argv.pop(0)
            if opt.startswith("--") and "=" in opt:
                opt, value = opt.split("=", 1)
                argv.insert(0, value)
            if opt in ("-h", "--help"):
                raise run_jobs.Exit(0, self.usage)
            if opt == "--":
                self.extra_opts = argv
                break
            if opt in ("--dry-run", "--scratch"):
                if opt[2:] not in allowed:
                    self.die(f"{self.script} does not take {opt}")
                setattr(self, opt[2:].replace("-", "_"), True)
                continue
            if opt.startswith("--"):
                if opt[2:] not in allowed:
                    self.die(f"unknown option '{opt}' for {self.script} (run with --help for the options)")
                if not argv:
                    self.die(f"option '{opt}' needs a value")
                value = argv.pop(0)
                if opt == "--trainer-dir":
                    self.trainer_dirs.append(value)
                else:
                    self.values[opt[2:]] = value
                continue
            self.positional.append(opt)

    def get(self, name, default=""):
        return self.values.get(name, default)

    @staticmethod
    def words(value):
        return value.split()

    def word_list(self, name, value, pattern, expected):
        if not value.strip():
            self.die(f"--{name} needs at least one value")
        for word in value.split():
            if not re.fullmatch(f"(?:{pattern})", word):
                self.die(f"--{name}: '{word}' is not valid (expected {expected})")
        return value.split()

    def _check(self, env):
        known = "|".join(map(re.escape, KNOWN_DATASETS))
        if self.own_datasets:
            self.datasets = self.get("datasets").split()
        else:
            self.datasets = self.word_list("datasets", self.get("datasets", " ".join(BENCHMARK)), known,
                                           "one of: " + " ".join(KNOWN_DATASETS))
        self.targets = self.word_list("targets", self.get("targets", " ".join(DG_TARGETS)),
                                      "|".join(DG_TARGETS), "one of: " + " ".join(DG_TARGETS))
        self.shots = [int(s) for s in self.word_list("shots", self.get("shots", " ".join(map(str, ALL_SHOTS))),
                                                     "[1-9][0-9]*", "a positive whole number")]
        self.seeds = [int(s) for s in self.word_list("seeds", self.get("seeds", " ".join(map(str, ALL_SEEDS))),
                                                     "[1-9][0-9]*", "a positive whole number")]
        self.bases = self.word_list("bases", self.get("bases", "regular enhanced"), "regular|enhanced",
                                    "regular or enhanced")
        self.alpha = self.get("alpha")
        if self.alpha and not re.fullmatch(r"[0-9]+(\.[0-9]+)?", self.alpha):
            self.die(f"--alpha '{self.alpha}' is not a number such as 0.5")
        self.load_epoch = self.get("load-epoch")
        if self.load_epoch and not re.fullmatch(r"[1-9][0-9]*", self.load_epoch):
            self.die(f"--load-epoch '{self.load_epoch}' is not a positive whole number")
        self.backbone = self.get("backbone")
        if self.backbone and not re.fullmatch(r"[A-Za-z0-9/@._-]+", self.backbone):
            self.die(f"--backbone '{self.backbone}' is not a backbone name such as RN50 or ViT-B/16")
        if self.backbone and os.path.isfile(self.backbone):
            self.backbone = os.path.abspath(self.backbone)  # train.py runs from the repository root
        jobs, gpus, submit = self.get("jobs"), self.get("gpus"), self.get("submit")
        if jobs and not re.fullmatch(r"[1-9][0-9]*", jobs):
            self.die(f"--jobs '{jobs}' is not a positive whole number")
        if gpus and not re.fullmatch(r"[0-9]+(,[0-9]+)*", gpus):
            self.die(f"--gpus '{gpus}' is not a comma-separated list of GPU ids such as 0,1,2,3")
        if submit and submit not in ("slurm", "local"):
            self.die(f"--submit '{submit}' is not valid (expected slurm, or local to try the submission on this machine)")
        self.gpus = [g for g in gpus.split(",") if g]
        self.jobs = int(jobs) if jobs else max(1, len(self.gpus))  # --gpus alone: one job per GPU
        self.submit, self.submit_opts = submit, self.get("submit-opts")
        self.cfg, self.eval_cfg = self.get("cfg"), self.get("eval-cfg")
        self.strong_base_opts = self.get("strong-base-opts").split()

        # Settings that name the output folder must come from the options, or two different runs
        # would share one folder and the second would be skipped as finished.
        opts = self.extra_opts
        if len(opts) % 2:
            self.die(f"extra opts after -- must be KEY VALUE pairs, got an odd count: {' '.join(opts)}")
        for word in opts:
            if word.startswith("--"):
                self.die(f"'{word}' comes after --, where only KEY VALUE config opts go; put options before --")
        named = {"DATASET.NUM_SHOTS": "pass --shots instead of DATASET.NUM_SHOTS after --, so the output folder "
                                      "names the shot count",
                 "TRAINER.TaskRes.RESIDUAL_SCALE": "pass --alpha instead of TRAINER.TaskRes.RESIDUAL_SCALE after --, "
                                                   "so the output folder names alpha",
                 "MODEL.BACKBONE.NAME": "pass --backbone instead of MODEL.BACKBONE.NAME after --, so the output "
                                        "folder names the backbone"}
        for key in opts[::2]:
            if key in named:
                self.die(named[key])

        # Paths the user gave are relative to where the script was started.
        data = self.get("root") or env.get("DATA", "")
        if not data and not self.dry_run:
            self.die("no dataset root: set DATA=/path/to/datasets or pass --root DIR")
        self.data = os.path.abspath(data) if data else DATA_PLACEHOLDER
        if not data:
            logger.info("no dataset root set (DATA or --root): the commands show %s where it goes", DATA_PLACEHOLDER)
        output = self.get("output") or env.get("OUTPUT", "")
        self.output = os.path.abspath(output) if output else "output"
        sbroot = self.get("strong-base-root") or env.get("STRONG_BASE", "")
        self.strong_base_root = os.path.abspath(sbroot) if sbroot else "strong_base"
        self.python = resolve_python(env)

    def no_positional(self):
        if self.positional:
            self.die(f"unexpected argument '{self.positional[0]}' (run with --help)")


def resolve_python(env):
    """The python of the train.py commands: $PYTHON, else the repository's .venv, else python3."""
    python = env.get("PYTHON", "")
    if python:
        if not shutil.which(python):
            raise PlanError(f"PYTHON={python} is not an executable; point PYTHON at a python with the "
                            "requirements installed")
        return python
    if os.access(os.path.join(ROOT, ".venv/bin/python"), os.X_OK):
        return ".venv/bin/python"
    return "python3"


# ---- TaskRes family (train_regular.sh, train_enhance.sh, test_dg.sh, scripts/taskres/*.sh) ----

class Planner:
    """Builds the run records of one workflow from its options and the declared protocols."""

    def __init__(self, opts, methods=None):
        self.o = opts
        self.methods = methods or comparison_methods()[0]
        self.runs = []
        self.views = views_suffix(opts.extra_opts)
        self.trainer_flags = [a for d in opts.trainer_dirs for a in ("--trainer-dir", os.path.abspath(d))]

    # -- helpers
    def method(self, name):
        return self.methods[name]

    def extra_for(self, trainer):
        """The ``--`` opts for a run of ``trainer``: all of them but the ``TRAINER.<group>`` pairs it does not
        read (train.py refuses another trainer's key; e.g. TRAINER.TaskRes.* reaches no StrongBase run)."""
        from engine import TRAINER_REGISTRY  # noqa: PLC0415 - registered by load_trainers
        from engine.checks import drop_unread_trainer_keys, trainer_defaults  # noqa: PLC0415

        extra = self.o.extra_opts
        if not any(str(key).startswith("TRAINER.") for key in extra[::2]):
            return list(extra)
        if not hasattr(self, "_owners"):
            self._owners = trainer_defaults(TRAINER_REGISTRY)[1]
        return drop_unread_trainer_keys(extra, trainer, TRAINER_REGISTRY, self._owners)

    def add(self, label, argv, out_dir, stage=0, requires=(), writes=None):
        if finished(out_dir):
            logger.info("skip (finished): %s", out_dir)
            return
        self.runs.append(Run(label=label, argv=[str(a) for a in argv], out_dir=out_dir, stage=stage,
                             requires=tuple(requires), writes=writes))

    def cfg_file(self, folder, stem):
        """A config name that must exist (a typo ends the workflow with the names there)."""
        path = f"{folder}/{stem}.yaml"
        if not os.path.isfile(os.path.join(ROOT, path)):
            here = os.path.join(ROOT, folder)
            names = sorted(n[:-5] for n in os.listdir(here) if n.endswith(".yaml")) if os.path.isdir(here) else []
            raise PlanError(f"no trainer config '{stem}': {path} does not exist (names there: {' '.join(names)})")
        return path

    def backbone_for(self, config_file):
        """--backbone when given, else the config's MODEL.BACKBONE.NAME."""
        if self.o.backbone:
            return self.o.backbone
        name = yaml_key(config_file, "MODEL", "BACKBONE", "NAME")
        if not name:
            raise PlanError(f"config {config_file} names no backbone (MODEL.BACKBONE.NAME); pass --backbone NAME, "
                            "e.g. --backbone RN50")
        return name

    def taskres_stem(self, dataset, shots):
        return self.o.cfg or self.method("TaskRes").config_stem(dataset, shots, None)

    def taskres_alpha(self, dataset):
        return self.o.alpha or self.method("TaskRes").alpha(dataset)

    def taskres_file(self, dataset, shots):
        return self.cfg_file("configs/trainers/TaskRes", self.taskres_stem(dataset, shots))

    def run_backbone(self, dataset, shots):
        """Backbone of the TaskRes runs of (dataset, shots): --backbone, else their config's."""
        return self.backbone_for(self.taskres_file(dataset, shots))

    def run_name(self, method, stem, tag, shots, dataset):
        folder = method.variant.folder.format(alpha=self.taskres_alpha(dataset) if method.trainer == "TaskRes"
                                              else method.alpha(dataset))
        return f"{stem}_{tag}{folder}{self.views}_{shots}shots"

    def variant_args(self, method, dataset, needs=""):
        alpha = self.taskres_alpha(dataset) if method.trainer == "TaskRes" else method.alpha(dataset)
        flags = [f.format(alpha=alpha, needs=needs) for f in method.variant.flags]
        opts = [o.format(alpha=alpha, needs=needs) for o in method.variant.opts]
        return flags, opts

    # -- StrongBase: the producer TaskRes-enhanced needs
    def strong_base_file(self, dataset, shots, backbone):
        sb = self.method("StrongBase").protocol.extra["writes"]
        cls = dataset_class(dataset)
        if not cls:
            raise PlanError(f"no dataset class known for '{dataset}' (enhanced bases exist for: "
                            f"{' '.join(BENCHMARK)} fashion_mnist image_folder)")
        return sb.format(root=self.o.strong_base_root, dataset_class=cls, tag=backbone_tag(backbone), shots=shots)

    def strong_base(self, dataset, shots, backbone, stage=0):
        """The enhanced base of (dataset, shots) for a backbone, unless its file exists."""
        producer = self.method("StrongBase")
        file = self.strong_base_file(dataset, shots, backbone)
        if os.path.isfile(file):
            logger.info("skip (exists): %s", file)
            return file
        seed = producer.protocol.extra["seeds"][0]
        folder = producer.protocol.extra["folder"].format(tag=backbone_tag(backbone), shots=shots)
        out = f"{self.o.output}/{dataset}/StrongBase/{folder}/seed{seed}"
        config = self.cfg_file(producer.config_dir(), producer.config_stem(dataset, shots, None))
        argv = [self.o.python, "train.py", "--root", self.o.data, "--seed", seed, "--trainer", "StrongBase",
                *self.trainer_flags, "--dataset-config-file", f"configs/datasets/{dataset}.yaml",
                "--config-file", config, "--output-dir", out, "--backbone", backbone, "DATASET.NUM_SHOTS", shots,
                "STRONG_BASE.ROOT", self.o.strong_base_root, *self.extra_for("StrongBase"), *self.o.strong_base_opts]
        label = f"StrongBase {dataset} {shots}-shot -> {file}"
        self.runs.append(Run(label=label, argv=[str(a) for a in argv], out_dir=out, stage=stage,
                             writes=(file, f"StrongBase {dataset} {shots}-shot finished but did not write {file}")))
        return file

    def taskres_pending(self, dataset, shots, base):
        """True when some seed of a TaskRes (dataset, shots, base) still has to run."""
        method = self.method("TaskRes" if base == "regular" else "TaskRes-enhanced")
        name = self.run_name(method, self.taskres_stem(dataset, shots), backbone_tag(self.run_backbone(dataset, shots)),
                             shots, dataset)
        return any(not finished(f"{self.o.output}/{dataset}/TaskRes/{name}/seed{s}") for s in self.o.seeds)

    def taskres_runs(self, dataset, shots, base, enhance, stage=0):
        """TaskRes training runs of one (dataset, shots, base) for every seed."""
        method = self.method("TaskRes" if base == "regular" else "TaskRes-enhanced")
        stem = self.taskres_stem(dataset, shots)
        config = self.taskres_file(dataset, shots)
        backbone = self.backbone_for(config)
        name = self.run_name(method, stem, backbone_tag(backbone), shots, dataset)
        flags, opts = self.variant_args(method, dataset, needs=enhance)
        requires = ()
        if base == "enhanced":
            requires = ((enhance, f"TaskRes {dataset} {shots}-shot enhanced-base: skipped, its enhanced base "
                                  f"{enhance} is missing"),)
        for seed in self.o.seeds:
            out = f"{self.o.output}/{dataset}/TaskRes/{name}/seed{seed}"
            self.add(f"TaskRes {dataset} {shots}-shot {base}-base seed{seed} -> {out}",
                     [self.o.python, "train.py", "--root", self.o.data, "--seed", seed, "--trainer", "TaskRes",
                      *self.trainer_flags, "--dataset-config-file", f"configs/datasets/{dataset}.yaml",
                      "--config-file", config, "--output-dir", out, *flags, "--backbone", backbone,
                      "DATASET.NUM_SHOTS", shots, *opts, *self.extra_for("TaskRes")],
                     out, stage, requires)

    def taskres_eval_runs(self, target, config, outdir, modeldir, alpha, enhance, epoch, backbone, stage=0):
        """Evaluate the checkpoints MODELDIR/seed<S> on a target for every seed, into OUTDIR/seed<S>."""
        for seed in self.o.seeds:
            out, mdir = f"{outdir}/seed{seed}", f"{modeldir}/seed{seed}"
            ckpt = f"{mdir}/prompt_learner/model.pth.tar-{epoch}"
            self.add(f"eval {target} seed{seed} -> {out}",
                     [self.o.python, "train.py", "--root", self.o.data, "--seed", seed, "--trainer", "TaskRes",
                      *self.trainer_flags, "--dataset-config-file", f"configs/datasets/{target}.yaml",
                      "--config-file", config, "--output-dir", out, "--model-dir", mdir, "--load-epoch", epoch,
                      "--eval-only", "--enhanced-base", enhance, "--backbone", backbone,
                      "TRAINER.TaskRes.RESIDUAL_SCALE", alpha, *self.extra_for("TaskRes")],
                     out, stage, ((ckpt, f"eval on {target} seed{seed}: checkpoint {ckpt} is missing (train it first, "
                                         "or pass --load-epoch N)"),))

    def taskres_max_epoch(self, stem):
        epoch = max_epoch(f"configs/trainers/TaskRes/{stem}.yaml", self.o.extra_opts, self.o.load_epoch)
        if epoch is None:
            raise PlanError(f"cannot tell the last epoch of config '{stem}'; pass --load-epoch N")
        return epoch

    def dg_config(self, backbone):
        """TaskRes' generalization config of a backbone; --eval-cfg overrides it."""
        if self.o.eval_cfg:
            return self.o.eval_cfg
        configs = self.method("TaskRes").protocol.extra["dg_configs"]
        tag = backbone_tag(backbone)
        if tag not in configs:
            raise PlanError(f"no generalization config for backbone '{backbone}'; pass --eval-cfg NAME (a file in "
                            "configs/trainers/TaskRes/)")
        return configs[tag]

    def zeroshot_run(self, dataset, method_name="ZeroshotCLIP", stage=0, backbone=None):
        """A zero-shot method on one dataset (no seeds, no shots)."""
        method = self.method(method_name)
        if method.protocol.extra.get("backbone_from_config"):  # the TaskRes scripts' zero-shot run
            stem = self.o.cfg or method.config_stem(dataset, 1, None)
            config = self.cfg_file(method.config_dir(), stem)
            backbone = self.backbone_for(config)
        else:
            config = method.config_file(dataset, 0, family_of(backbone))
        out = f"{self.o.output}/{dataset}/{method.trainer}/{backbone_tag(backbone)}"
        label = f"{method.trainer} {dataset} -> {out}"
        requires = () if method.protocol.extra.get("backbone_from_config") else (
            (config, f"{method.trainer} {dataset}: config {config} does not exist in this checkout (is the method "
                     "implemented here?)"),)
        self.add(label, [self.o.python, "train.py", "--root", self.o.data, "--trainer", method.trainer,
                         *self.trainer_flags, "--dataset-config-file", f"configs/datasets/{dataset}.yaml",
                         "--config-file", config, "--output-dir", out, "--backbone", backbone, "--eval-only",
                         *self.extra_for(method.trainer)], out, stage, requires)

    # -- other methods of the comparison
    def method_runs(self, method, dataset, shots, outroot, backbone, stage=0, more=()):
        """Few-shot training runs of a method on one (dataset, shots), every seed."""
        config = method.config_file(dataset, shots, family_of(backbone))
        name = self.run_name(method, method.config_stem(dataset, shots, family_of(backbone)), backbone_tag(backbone),
                             shots, dataset)
        flags, opts = self.variant_args(method, dataset)
        for seed in self.o.seeds:
            out = f"{outroot}/{method.trainer}/{name}/seed{seed}"
            what = f"{method.name} {dataset} {shots}-shot seed{seed}"
            self.add(f"{what} -> {out}",
                     [self.o.python, "train.py", "--root", self.o.data, "--seed", seed, "--trainer", method.trainer,
                      *self.trainer_flags, "--dataset-config-file", f"configs/datasets/{dataset}.yaml",
                      "--config-file", config, "--output-dir", out, *flags, "--backbone", backbone,
                      "DATASET.NUM_SHOTS", shots, *opts, *more, *self.extra_for(method.trainer)],
                     out, stage, ((config, f"{what}: config {config} does not exist in this checkout (is the method "
                                           "implemented here?)"),))

    def method_eval_runs(self, method, target, config, outdir, modelroot, backbone, stage, more=()):
        """Evaluate the trained runs <modelroot>/seed<S> of a method on a target dataset."""
        epoch = max_epoch(config, self.o.extra_opts)
        flags, opts = self.variant_args(method, target)
        for seed in self.o.seeds:
            out, mdir = f"{outdir}/seed{seed}", f"{modelroot}/seed{seed}"
            self.add(f"eval {method.name} on {target} seed{seed} -> {out}",
                     [self.o.python, "train.py", "--root", self.o.data, "--seed", seed, "--trainer", method.trainer,
                      *self.trainer_flags, "--dataset-config-file", f"configs/datasets/{target}.yaml",
                      "--config-file", config, "--output-dir", out, "--model-dir", mdir,
                      *(["--load-epoch", epoch] if epoch else []), "--eval-only", *flags, "--backbone", backbone,
                      *opts, *more, *self.extra_for(method.trainer)],
                     out, stage, ((f"{mdir}/results_test.json", f"{method.name} on {target} seed{seed}: the trained run "
                                                               f"{mdir} is not finished (train it first)"),))


# ---- workflows --------------------------------------------------------------------------------

def plan_regular(o):
    o.no_positional()
    p = Planner(o)
    for shots in o.shots:
        for dataset in o.datasets:
            p.taskres_runs(dataset, shots, "regular", "none")
    return p.runs


def plan_enhance(o):
    """Every missing base first (stage 0), then the TaskRes runs on each base (stage 1)."""
    o.no_positional()
    p = Planner(o)
    for dataset in o.datasets:
        p.strong_base_file(dataset, 1, "x")  # fail now on a dataset without a class name
    pending = []
    for shots in o.shots:
        for dataset in o.datasets:
            if not p.taskres_pending(dataset, shots, "enhanced"):
                logger.info("skip (all seeds finished): %s %d-shot enhanced", dataset, shots)
                continue
            pending.append((dataset, shots, p.strong_base(dataset, shots, p.run_backbone(dataset, shots))))
    for dataset, shots, file in pending:
        p.taskres_runs(dataset, shots, "enhanced", file, stage=1)
    return p.runs


def plan_dg(o):
    o.no_positional()
    if len(o.shots) != 1:
        o.die(f"--shots takes one shot count for test_dg.sh, got '{' '.join(map(str, o.shots))}'")
    p = Planner(o)
    shots = o.shots[0]
    stem = p.taskres_stem(DG_SOURCE, shots)
    backbone = p.run_backbone(DG_SOURCE, shots)
    eval_cfg = p.cfg_file("configs/trainers/TaskRes", p.dg_config(backbone))
    alpha = p.taskres_alpha(DG_SOURCE)
    epoch = p.taskres_max_epoch(stem)
    enhanced = p.strong_base_file(DG_SOURCE, shots, backbone)
    for base in o.bases:
        method = p.method("TaskRes" if base == "regular" else "TaskRes-enhanced")
        name = p.run_name(method, stem, backbone_tag(backbone), shots, DG_SOURCE)
        for target in o.targets:
            p.taskres_eval_runs(target, eval_cfg, f"{o.output}/dg/{target}/TaskRes/{name}",
                                f"{o.output}/{DG_SOURCE}/TaskRes/{name}", alpha,
                                enhanced if base == "enhanced" else "none", epoch, backbone)
    return p.runs


def plan_zeroshot(o):
    o.no_positional()
    p = Planner(o)
    for dataset in o.datasets:
        p.zeroshot_run(dataset)
    return p.runs


def plan_strong_base(o):
    o.no_positional()
    p = Planner(o)
    for dataset in o.datasets:
        p.strong_base_file(dataset, 1, "x")
    producer = p.method("StrongBase")
    backbone = p.backbone_for(p.cfg_file(producer.config_dir(), producer.config_stem("", 0, None)))
    for shots in o.shots:
        for dataset in o.datasets:
            p.strong_base(dataset, shots, backbone)
    return p.runs


def plan_main(o):
    if len(o.positional) != 5:
        o.die(f"main.sh takes 5 arguments (DATASET CFG ENHANCE SHOTS SCALE), got {len(o.positional)}: run with --help")
    dataset, o.cfg, enhance, shots, o.alpha = o.positional
    o.word_list("datasets", dataset, "|".join(KNOWN_DATASETS), "one of: " + " ".join(KNOWN_DATASETS))
    o.word_list("shots", shots, "[1-9][0-9]*", "a positive whole number")
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", o.alpha):
        o.die(f"SCALE '{o.alpha}' is not a number such as 0.5")
    p = Planner(o)
    p.taskres_runs(dataset, int(shots), "regular" if enhance == "none" else "enhanced", enhance)
    return p.runs


def plan_eval(o):
    if len(o.positional) != 4:
        o.die(f"eval.sh takes 4 arguments (TARGET CFG OUTDIR MODELDIR), got {len(o.positional)}: run with --help")
    target, stem, outdir, modeldir = o.positional
    o.word_list("target", target, "|".join(KNOWN_DATASETS), "one of: " + " ".join(KNOWN_DATASETS))
    enhance = o.get("enhanced-base", "none")
    if enhance != "none":
        enhance = os.path.abspath(enhance)
    p = Planner(o)
    config = p.cfg_file("configs/trainers/TaskRes", stem)
    p.taskres_eval_runs(target, config, os.path.abspath(outdir), os.path.abspath(modeldir), o.alpha or "0.5",
                        enhance, p.taskres_max_epoch(stem), p.backbone_for(config))
    return p.runs


def plan_compare(o):
    """Three stages, each ending at a barrier when runs are queued: the training runs and the
    producers (enhanced bases); the runs on what they produced; the evaluations of trained
    checkpoints (DG, base-to-new)."""
    o.no_positional()
    methods, default = comparison_methods()
    names = o.word_list("methods", o.get("methods", " ".join(default)), "|".join(map(re.escape, methods)),
                        "one of: " + " ".join(methods))
    protocols = o.word_list("protocols", o.get("protocols", "fewshot dg"), "|".join(PROTOCOLS),
                            "one of: " + " ".join(PROTOCOLS))
    for key in o.extra_opts[::2]:
        for name in names:
            if any(key.startswith(prefix) for prefix in methods[name].protocol.extra.get("locked_opts", ())):
                o.die(f"{key} after -- would change {name} runs without changing their folder names; declare a "
                      f"variant in its protocol instead")
    o.backbone = o.backbone or COMPARE_BACKBONE
    p = Planner(o, methods)
    backbone, family = o.backbone, family_of(o.backbone)
    tag = backbone_tag(backbone)
    names = [name for name in names if publishes(o, methods[name], family, asked="methods" in o.values)]
    pending = []
    for name in names:
        method = methods[name]
        if "fewshot" in protocols:
            for dataset in o.datasets:
                if not method.protocol.trains:
                    p.zeroshot_run(dataset, method.trainer, backbone=backbone)
                    continue
                for shots in o.shots:
                    if method.variant.needs:  # made first; the runs on it wait for the barrier
                        base = "enhanced" if method.trainer == "TaskRes" else method.variant.name
                        if not p.taskres_pending(dataset, shots, base):
                            logger.info("skip (all seeds finished): %s %d-shot %s", dataset, shots, base)
                            continue
                        file = p.strong_base(dataset, shots, p.run_backbone(dataset, shots))
                        pending.append((dataset, shots, file))
                    elif method.trainer == "TaskRes":
                        p.taskres_runs(dataset, shots, "regular", "none")
                    else:
                        p.method_runs(method, dataset, shots, f"{o.output}/{dataset}", backbone)
        if "base2new" in protocols and "base2new" in method.protocol.evaluations:
            for dataset in o.datasets:
                p.method_runs(method, dataset, B2N_SHOTS, f"{o.output}/base2new/train_base/{dataset}", backbone,
                              more=("DATASET.SUBSAMPLE_CLASSES", "base"))
    for dataset, shots, file in pending:
        p.taskres_runs(dataset, shots, "enhanced", file, stage=1)
    do_dg = "dg" in protocols and DG_SOURCE in o.datasets and DG_SHOTS in o.shots
    for name in names:
        method = methods[name]
        if do_dg and "dg" in method.protocol.evaluations:
            for target in o.targets:
                if not method.protocol.trains:
                    p.zeroshot_run(target, method.trainer, stage=2, backbone=backbone)
                elif method.trainer == "TaskRes":
                    compare_taskres_dg(p, method, target)
                else:
                    stem = method.config_stem(DG_SOURCE, DG_SHOTS, family)
                    run = p.run_name(method, stem, tag, DG_SHOTS, DG_SOURCE)
                    p.method_eval_runs(method, target, method.config_file(DG_SOURCE, DG_SHOTS, family),
                                       f"{o.output}/dg/{target}/{method.trainer}/{run}",
                                       f"{o.output}/{DG_SOURCE}/{method.trainer}/{run}", backbone, stage=2)
        if "base2new" in protocols and "base2new" in method.protocol.evaluations:
            for dataset in o.datasets:
                stem = method.config_stem(dataset, B2N_SHOTS, family)
                run = p.run_name(method, stem, tag, B2N_SHOTS, dataset)
                p.method_eval_runs(method, dataset, method.config_file(dataset, B2N_SHOTS, family),
                                   f"{o.output}/base2new/test_new/{dataset}/{method.trainer}/{run}",
                                   f"{o.output}/base2new/train_base/{dataset}/{method.trainer}/{run}", backbone,
                                   stage=2, more=("DATASET.NUM_SHOTS", B2N_SHOTS, "DATASET.SUBSAMPLE_CLASSES", "new"))
    return p.runs


def publishes(o, method, family, asked):
    """Whether ``method`` publishes a setting for the backbone family (MaPLe, PromptSRC and CLIP-LoRA only
    have ViT ones): a method of the default list that does not is left out with a log line; one named by
    --methods ends the workflow with its rule's sentence."""
    if not method.protocol.trains or not o.datasets or not o.shots:
        return True
    try:
        method.config_stem(o.datasets[0], o.shots[0], family)
    except ValueError as e:
        if asked:
            o.die(f"{method.name}: {e}; choose another --backbone")
        logger.info("skip %s: %s (compare.sh --backbone ViT-B/16 --methods %s runs it)", method.name, e, method.name)
        return False
    return True


def compare_taskres_dg(p, method, target):
    """The ImageNet 16-shot TaskRes runs (regular or enhanced base) evaluated on a DG target."""
    backbone = p.run_backbone(DG_SOURCE, DG_SHOTS)
    enhanced = method.variant.needs
    enhance = p.strong_base_file(DG_SOURCE, DG_SHOTS, backbone) if enhanced else "none"
    stem = p.taskres_stem(DG_SOURCE, DG_SHOTS)
    name = p.run_name(method, stem, backbone_tag(backbone), DG_SHOTS, DG_SOURCE)
    tag = backbone_tag(backbone)
    # its generalization config for a known backbone, else its training config (a weights file)
    eval_stem = p.dg_config(backbone) if tag in method.protocol.extra["dg_configs"] else stem
    p.taskres_eval_runs(target, p.cfg_file("configs/trainers/TaskRes", eval_stem),
                        f"{p.o.output}/dg/{target}/TaskRes/{name}", f"{p.o.output}/{DG_SOURCE}/TaskRes/{name}",
                        p.taskres_alpha(DG_SOURCE), enhance, p.taskres_max_epoch(stem), backbone, stage=2)


# -- MVLPT (scripts/mvlpt/): the original scripts' folders
#   source: <OUTPUT>/<Dataset,Dataset,...>/MVLPT/<KIND>/<cfg>[_<tag>]_<K>shots/nctx<N>_cscFalse_ctpmiddle/seed<S>
#   target: <OUTPUT>/<Dataset>/MVLPT/<KIND>/<cfg>[_<tag>]_<K>shots/nctx<N>_cscFalse_ctpmiddle_init-<src>/seed<S>
#   <src> = "scratch" or "src" + 8 hex digits of the source folder's path below OUTPUT.
# The ELEVATER workflows (tasks named as ELEVATER names them, read by the Elevater dataset, no --dataset-coop):
#   source: <OUTPUT>/ELEVATER[-<8 hex of the task list>]/MVLPT/<KIND>/<cfg>[_<tag>]_<K>shots/nctx<N>_cscFalse_ctpmiddle/
#           seed<S> (no suffix for the default task list: 19 names do not fit in one folder name)
#   target: <OUTPUT>/<elevater name>/MVLPT/<KIND>/..._init-<src>/seed<S>, as the CoOp-data targets

def _mvlpt_common(o, n_args, script, what, elevater=False):
    """Checks of TRAINER CFG NCTX SHOTS (the ELEVATER scripts also take the "elevater_kinds") -> the pieces."""
    if len(o.positional) != n_args:
        o.die(f"{script} takes {n_args} arguments ({what}), got {len(o.positional)}: run with --help")
    p = Planner(o)
    mv = p.method("MVLPT").protocol.extra
    kind, cfg, nctx, shots = o.positional[:4]
    if kind in mv["elevater_kinds"] and not elevater:
        o.die(f"TRAINER '{kind}' is only taken by the ELEVATER scripts (main_*_elevater_cut.sh), as in the original")
    if kind not in mv["kinds"] and kind not in mv["elevater_kinds"]:
        more, more_names = (", COCOOP", ", CoCoOp") if elevater else ("", "")
        o.die(f"TRAINER '{kind}' is not one of CoOp, VPT, UPT{more} (MCoOp, MVPT, MUPT{more_names})")
    if not os.path.isfile(os.path.join(ROOT, f"configs/trainers/MVLPT/{cfg}.yaml")):
        o.die(f"CFG '{cfg}' is not a file in configs/trainers/MVLPT/ (e.g. vit_b16)")
    if not re.fullmatch(r"[1-9][0-9]*", nctx):
        o.die(f"NCTX '{nctx}' is not a positive whole number")
    if not re.fullmatch(r"[1-9][0-9]*", shots):
        o.die(f"SHOTS '{shots}' is not a positive whole number")
    for key in o.extra_opts[::2]:
        if key in ("TRAINER.MVLPT.VPT.N_CTX", "TRAINER.MVLPT.COOP.N_CTX", "TRAINER.MVLPT.COCOOP.N_CTX"):
            o.die(f"pass NCTX instead of {key} after --, so the output folder names it")
    if kind in mv["kinds"]:
        opts = list(mv["common_opts"]) + [v.format(nctx=nctx) for v in mv["kinds"][kind]]
    else:  # an ELEVATER-only kind: its opts in full, as the original passes them
        opts = [v.format(nctx=nctx) for v in mv["elevater_kinds"][kind]]
    backbone = ["--backbone", o.backbone] if o.backbone else []
    tag = f"_{backbone_tag(o.backbone)}" if o.backbone else ""
    return p, mv, kind, cfg, nctx, shots, opts, backbone, tag


def class_list(datasets):
    """"imagenet dtd" -> "ImageNet,DescribableTextures" (MVLPT's --dataset with --dataset-coop)."""
    return ",".join(dataset_class(d) for d in datasets)


def elevater_sources(mv):
    """The ELEVATER source run's default tasks: the original's list, in its order, less the refused ones."""
    return [name for name in mv["elevater"] if name not in mv["elevater_refused"]]


def elevater_names(o, mv, what, names):
    """``names`` when each is an ELEVATER dataset the Elevater class reads; else one sentence naming ``what``."""
    for name in names:
        if name in mv["elevater_refused"]:
            o.die(f"{what} '{name}' {mv['elevater_refused'][name]}")
        if name not in mv["elevater"]:
            o.die(f"{what} '{name}' is not an ELEVATER dataset (one of: {' '.join(elevater_sources(mv))})")
    return list(names)


def elevater_folder(mv, tasks):
    """The ELEVATER source folder's first part for a task list (its order is part of the run's identity)."""
    if list(tasks) == elevater_sources(mv):
        return "ELEVATER"
    return "ELEVATER-" + hashlib.sha1(",".join(tasks).encode()).hexdigest()[:8]


def plan_mvlpt_mt(o):
    p, mv, kind, cfg, nctx, shots, opts, backbone, tag = _mvlpt_common(
        o, 4, "main_mt_coopdata_cut.sh", "TRAINER CFG NCTX SHOTS")
    sources = class_list(o.datasets if "datasets" in o.values else mv["sources"])
    run = f"{o.output}/{sources}/MVLPT/{kind}/{cfg}{tag}_{shots}shots/{mv['setting'].format(nctx=nctx)}"
    return _mvlpt_seed_runs(p, f"MVLPT {kind} source {shots}-shot seed{{seed}}", run, cfg, sources, shots,
                            ["--multi-task", *backbone, *opts])


def plan_mvlpt_mt_elevater(o):
    p, mv, kind, cfg, nctx, shots, opts, backbone, tag = _mvlpt_common(
        o, 4, "main_mt_elevater_cut.sh", "TRAINER CFG NCTX SHOTS", elevater=True)
    if "datasets" in o.values and not o.datasets:
        o.die("--datasets needs at least one value")
    tasks = elevater_names(o, mv, "--datasets", o.datasets if "datasets" in o.values else elevater_sources(mv))
    run = (f"{o.output}/{elevater_folder(mv, tasks)}/MVLPT/{kind}/{cfg}{tag}_{shots}shots/"
           f"{mv['setting'].format(nctx=nctx)}")
    return _mvlpt_seed_runs(p, f"MVLPT {kind} ELEVATER source {shots}-shot seed{{seed}}", run, cfg, ",".join(tasks),
                            shots, ["--multi-task", *backbone, *opts], coop=False)


def _mvlpt_seed_runs(p, label, run, cfg, dataset, shots, rest, coop=True):
    """One MVLPT run per seed into <run>/seed<S>; ``rest``: the flags and opts after --shots (and --dataset-coop,
    which names CoOp's datasets; without it ``dataset`` holds ELEVATER names)."""
    for seed in p.o.seeds:
        out = f"{run}/seed{seed}"
        p.add(f"{label.replace('{seed}', str(seed))} -> {out}",
              [p.o.python, "train.py", "--root", p.o.data, "--seed", seed, "--trainer", "MVLPT", *p.trainer_flags,
               "--config-file", f"configs/trainers/MVLPT/{cfg}.yaml", "--output-dir", out, "--dataset", dataset,
               "--shots", shots, *(["--dataset-coop"] if coop else []), *rest, *p.extra_for("MVLPT")], out)
    return p.runs


def _mvlpt_source_shots(o):
    source_shots = o.get("source-shots")
    if source_shots and not re.fullmatch(r"[1-9][0-9]*", source_shots):
        o.die(f"--source-shots '{source_shots}' is not a positive whole number")
    if o.scratch and o.get("model-dir"):
        o.die("--scratch and --model-dir exclude each other")
    return source_shots


def _mvlpt_init(o, mv, kind, cfg, nctx, shots, tag, scratch, sources, first):
    """(--model-dir flags, <src> of the target's folder, the source folder or "") of a target run.
    ``sources``: the default source folder's first part; ``first``: what makes the source prompt."""
    if scratch:
        return [], "scratch", ""
    model_dir = o.get("model-dir")
    if model_dir:
        model_dir = os.path.abspath(model_dir)
    else:
        model_dir = (f"{o.output}/{sources}/MVLPT/{kind}/{cfg}{tag}_{o.get('source-shots') or shots}shots/"
                     f"{mv['setting'].format(nctx=nctx)}")
        model_dir = os.path.join(ROOT, model_dir) if not model_dir.startswith("/") else model_dir
    prompt = f"{model_dir}/prompt_learner/model-best.pth.tar"
    if not os.path.isfile(prompt) and not o.dry_run:
        o.die(f"no source prompt at {prompt}: run {first} and scripts/mvlpt/avg_ckpt.py first, "
              "or pass --model-dir DIR or --scratch")
    # named by the source's path below OUTPUT when it lies there, so a moved OUTPUT keeps its names
    out_abs = os.path.join(ROOT, o.output)  # OUTPUT is absolute, or relative to the repository root
    below = model_dir[len(out_abs) + 1:] if model_dir.startswith(out_abs + "/") else model_dir
    return ["--model-dir", model_dir], "src" + hashlib.sha1(below.encode()).hexdigest()[:8], model_dir


def _mvlpt_target_runs(p, mv, kind, cfg, nctx, shots, tag, target, init, src, model_dir, rest, coop=True):
    run = f"{p.o.output}/{target}/MVLPT/{kind}/{cfg}{tag}_{shots}shots/{mv['setting'].format(nctx=nctx)}_init-{src}"
    return _mvlpt_seed_runs(p, f"MVLPT {kind} target {target} {shots}-shot seed{{seed}} (init: "
                               f"{model_dir or 'scratch'})", run, cfg, target, shots, [*init, *rest], coop=coop)


def coop_sources(o, mv):
    """--sources (CoOp dataset config names), else the original's 11, as the source folder names them."""
    known = "|".join(map(re.escape, KNOWN_DATASETS))
    given = o.get("sources")
    names = o.word_list("sources", given, known, "one of: " + " ".join(KNOWN_DATASETS)) if given else mv["sources"]
    return class_list(names)


def plan_mvlpt_single(o):
    p, mv, kind, cfg, nctx, shots, opts, backbone, tag = _mvlpt_common(
        o, 5, "main_single_coopdata_cut.sh", "TRAINER CFG NCTX SHOTS DATASET")
    dataset = o.positional[4]
    o.word_list("dataset", dataset, "|".join(KNOWN_DATASETS), "one of: " + " ".join(KNOWN_DATASETS))
    _mvlpt_source_shots(o)
    init, src, model_dir = _mvlpt_init(o, mv, kind, cfg, nctx, shots, tag, o.scratch,
                                       None if o.scratch or o.get("model-dir") else coop_sources(o, mv),
                                       "main_mt_coopdata_cut.sh")
    return _mvlpt_target_runs(p, mv, kind, cfg, nctx, shots, tag, dataset_class(dataset), init, src, model_dir,
                              [*backbone, *opts])


def plan_mvlpt_single_elevater(o):
    p, mv, kind, cfg, nctx, shots, opts, backbone, tag = _mvlpt_common(
        o, 5, "main_single_elevater_cut.sh", "TRAINER CFG NCTX SHOTS DATASET", elevater=True)
    [target] = elevater_names(o, mv, "DATASET", [o.positional[4]])
    elevater = elevater_names(o, mv, "--elevater-sources", o.get("elevater-sources").split())
    _mvlpt_source_shots(o)
    if o.get("sources") and elevater:
        o.die("--sources and --elevater-sources exclude each other")
    # as the original: the prompt starts from the CoOp-data source run (main_mt_coopdata_cut.sh), COCOOP's
    # (no such run) from scratch
    scratch = o.scratch or (kind in mv["elevater_kinds"] and not o.get("model-dir"))
    sources = None
    if not scratch and not o.get("model-dir"):
        sources = elevater_folder(mv, elevater) if elevater else coop_sources(o, mv)
    init, src, model_dir = _mvlpt_init(o, mv, kind, cfg, nctx, shots, tag, scratch, sources, "the source script")
    return _mvlpt_target_runs(p, mv, kind, cfg, nctx, shots, tag, target, init, src, model_dir,
                              [*backbone, *opts], coop=False)


PARALLEL = "jobs gpus submit submit-opts dry-run"
WORKFLOWS = {
    # name: (script, allowed options, planner, usage)
    "regular": ("train_regular.sh", "datasets shots seeds backbone cfg alpha root output trainer-dir " + PARALLEL,
                plan_regular),
    "enhance": ("train_enhance.sh", "datasets shots seeds backbone cfg alpha strong-base-root strong-base-opts root "
                "output trainer-dir " + PARALLEL, plan_enhance),
    "dg": ("test_dg.sh", "targets bases seeds shots backbone cfg eval-cfg alpha load-epoch strong-base-root root output "
           "trainer-dir " + PARALLEL, plan_dg),
    "zeroshot": ("scripts/taskres/zeroshot.sh", "datasets backbone cfg root output trainer-dir " + PARALLEL,
                 plan_zeroshot),
    "strong_base": ("scripts/taskres/strong_base.sh", "datasets shots backbone strong-base-root root output "
                    "trainer-dir " + PARALLEL, plan_strong_base),
    "main": ("scripts/taskres/main.sh", "seeds backbone root output trainer-dir " + PARALLEL, plan_main),
    "eval": ("scripts/taskres/eval.sh", "seeds load-epoch alpha backbone root enhanced-base trainer-dir " + PARALLEL,
             plan_eval),
    "compare": ("compare.sh", "methods protocols datasets shots seeds backbone root output trainer-dir " + PARALLEL,
                plan_compare),
    "mvlpt_mt": ("scripts/mvlpt/main_mt_coopdata_cut.sh", "seeds datasets backbone root output dry-run trainer-dir",
                 plan_mvlpt_mt),
    "mvlpt_single": ("scripts/mvlpt/main_single_coopdata_cut.sh", "seeds backbone root output dry-run sources "
                     "source-shots model-dir scratch trainer-dir", plan_mvlpt_single),
    "mvlpt_mt_elevater": ("scripts/mvlpt/main_mt_elevater_cut.sh", "seeds datasets backbone root output dry-run "
                          "trainer-dir", plan_mvlpt_mt_elevater),
    "mvlpt_single_elevater": ("scripts/mvlpt/main_single_elevater_cut.sh", "seeds backbone root output dry-run "
                              "sources elevater-sources source-shots model-dir scratch trainer-dir",
                              plan_mvlpt_single_elevater),
}
OWN_DATASETS = {"mvlpt_mt_elevater"}  # workflows whose --datasets are ELEVATER names, checked by their planner


def usage(name):
    from scripts.plan_usage import USAGE

    return USAGE[name]


def plan(name, argv, env=None):
    """(options, run records) of a workflow's command line; raises PlanError on bad input."""
    script, allowed, planner = WORKFLOWS[name]
    if name == "dg" and not any(a in ("--shots",) or a.startswith("--shots=") for a in
                                (argv[:argv.index("--")] if "--" in argv else argv)):
        argv = ["--shots", str(DG_SHOTS), *argv]  # the DG source is the 16-shot run unless --shots says otherwise
    opts = Options(script, allowed, argv, usage(name), env, own_datasets=name in OWN_DATASETS)
    load_trainers(opts.trainer_dirs)
    return opts, planner(opts)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="[taskres] %(message)s", stream=sys.stderr)
    if not argv or argv[0] not in WORKFLOWS:
        print(f"usage: python scripts/plan.py {{{','.join(WORKFLOWS)}}} [options]", file=sys.stderr)
        return 2
    try:
        opts, runs = plan(argv[0], argv[1:])
    except run_jobs.Exit as e:
        print(e.text)
        return e.code
    except PlanError as e:
        print(f"[taskres] error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a UserError of the trainer folders, a config that does not parse
        from engine.errors import UserError

        if isinstance(e, (UserError, yaml.YAMLError)):
            print(f"[taskres] error: {e}", file=sys.stderr)
            return 2
        raise
    os.chdir(ROOT)  # train.py and configs/ live there; every path above is absolute or relative to it
    return run_jobs.execute(runs, dry_run=opts.dry_run, jobs=opts.jobs, gpus=opts.gpus, submit=opts.submit,
                            submit_opts=opts.submit_opts, log_dir=os.path.join(opts.output, "jobs"))


if __name__ == "__main__":
    sys.exit(main())
