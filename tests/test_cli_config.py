"""train.py's CLI and config: flags only override when given, flag order, int for float keys,
keys nothing reads, early one-sentence errors, the registry and plugin trainers, train()'s finally."""
import os
import re
import textwrap

import pytest
import torch

import dassl_toys
import train
import trainers
from engine import TRAINER_REGISTRY
from engine.config import _UNUSED, _all_keys, check_cfg, get_cfg_default
from engine.errors import ConfigError, UserError
from helpers import ROOT, make_image_folder, run_train, tiny_clip, write_tiny_config


def cfg_from(argv):
    return train.setup_cfg(train.parse_args([str(a) for a in argv]))


def test_flags_not_given_keep_the_yaml_values(tmp_path):
    yaml = tmp_path / "c.yaml"
    yaml.write_text("SEED: 5\nOUTPUT_DIR: from_yaml\nTRAINER:\n  NAME: TaskRes\n  TaskRes:\n"
                    "    ENHANCED_BASE: base.pth\nMODEL:\n  BACKBONE:\n    NAME: RN50\n")
    cfg = cfg_from(["--config-file", yaml])
    assert (cfg.SEED, cfg.OUTPUT_DIR, cfg.TRAINER.TaskRes.ENHANCED_BASE) == (5, "from_yaml", "base.pth")
    cfg = cfg_from(["--config-file", yaml, "--seed", 2, "--enhanced-base", "none", "--output-dir", "x"])
    assert (cfg.SEED, cfg.OUTPUT_DIR, cfg.TRAINER.TaskRes.ENHANCED_BASE) == (2, "x", "none")


def test_flags_go_before_or_after_the_key_value_opts():
    args = train.parse_args(["--trainer", "TaskRes", "DATASET.NUM_SHOTS", "1", "--output-dir", "X", "OPTIM.LR", "-0.5"])
    assert args.output_dir == "X" and args.opts == ["DATASET.NUM_SHOTS", "1", "OPTIM.LR", "-0.5"]


def test_an_unknown_flag_among_the_opts_says_so():
    pattern = r'"--outptu-dir" .* looks like a flag.*flags go before or after the KEY VALUE'
    with pytest.raises(ConfigError, match=pattern):
        cfg_from(["--trainer", "TaskRes", "DATASET.NUM_SHOTS", "1", "--", "--outptu-dir", "X"])


def test_integers_are_accepted_for_float_keys(tmp_path):
    yaml = tmp_path / "c.yaml"
    yaml.write_text("OPTIM:\n  LR: 1\n  WARMUP_CONS_LR: 0\n")
    cfg = cfg_from(["--config-file", yaml, "TRAINER.TaskRes.RESIDUAL_SCALE", "1", "OPTIM.GAMMA", "2"])
    for value in (cfg.OPTIM.LR, cfg.OPTIM.WARMUP_CONS_LR, cfg.TRAINER.TaskRes.RESIDUAL_SCALE, cfg.OPTIM.GAMMA):
        assert type(value) is float
    assert (cfg.OPTIM.LR, cfg.TRAINER.TaskRes.RESIDUAL_SCALE, cfg.OPTIM.GAMMA) == (1.0, 1.0, 2.0)
    with pytest.raises(ConfigError, match="Wrong value type for config key OPTIM.MAX_EPOCH"):
        cfg_from(["OPTIM.MAX_EPOCH", "1.5"])  # the other way round stays an error


# ---- every config key is read somewhere or refused when changed ------------------------------
# A key counts as read when code reads it from the final config of a real run (config_reads
# records every leaf read): each registered trainer trained and evaluated, the end-to-end,
# best_val, multitask and ELEVATER paths, and the builders every value of a choice key reaches
# (each optimizer, scheduler, warm-up, transform, an unlabelled loader). A key nothing reads
# never shows up, whatever the code text holds (the probes below prove it).
def _project_defaults():
    """The defaults of the engine and of the project's own trainer modules (not the test toys')."""
    cfg = get_cfg_default()
    for module in trainers._modules.values():
        if callable(getattr(module, "extend_cfg", None)):
            module.extend_cfg(cfg)
    return cfg


ALL_KEYS = sorted(_all_keys(_project_defaults()))
META = {"VERSION"}  # Dassl's config version stamp: informational


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 7
    if isinstance(value, str):
        return value + "zzz"
    return type(value)(["zzz"])


def _reading_scenarios(tmp, monkeypatch):
    """Run everything that reads the config, with recording configs; returns the keys read."""
    from collections import OrderedDict

    import torch.nn as nn

    from config_reads import recording, recording_configs
    from dataset_replicas import REPLICA_OPTS, build_replica
    from engine import TrainerXU
    from engine.data.data_manager import DataManager
    from engine.data.datasets import DatasetBase, build_dataset
    from engine.data.transforms import AVAI_CHOICES, build_transform
    from engine.optim import AVAI_OPTIMS, AVAI_SCHEDS, build_lr_scheduler, build_optimizer
    from test_every_trainer import FAST

    root = str(tmp / "data")
    for name in ("DescribableTextures", "EuroSAT", "ImageNet", "Elevater"):
        build_replica(name, root)
    cfg = write_tiny_config(tmp / "cfg.yaml", tiny_clip(tmp), dataset="DescribableTextures", epochs=1, batch=4)
    common = ["--root", root, "--seed", 1, "--config-file", cfg, "DATASET.NUM_SHOTS", 2,
              "FEATURE_CACHE.DIR", tmp / "features", "STRONG_BASE.ROOT", tmp / "strong_base"]
    with recording_configs(monkeypatch) as reads:
        for name in sorted(n for n, _ in TRAINER_REGISTRY):
            run_train(*common, "--trainer", name, "--output-dir", tmp / name, *FAST.get(name, []))
        out = tmp / "e2e"
        run_train(*common, "--trainer", "TaskRes", "--output-dir", out, "FEATURE_CACHE.ENABLED", False,
                  "TEST.FINAL_MODEL", "best_val")
        run_train(*common, "--trainer", "TaskRes", "--output-dir", tmp / "eval", "--eval-only", "--model-dir", out)
        run_train(*common, "--trainer", "TaskRes", "--output-dir", tmp / "tracked", "TRACKING.MLFLOW", True,
                  "TRACKING.MLFLOW_URI", f"file:{tmp / 'mlruns'}", "TRACKING.WANDB", True,
                  "TRACKING.WANDB_DIR", tmp / "wandb")
        run_train(*common, "--trainer", "TaskRes", "--output-dir", tmp / "inet", "DATASET.NAME", "ImageNet",
                  "TEST.FINAL_MODEL", "best_val", "TEST.ALLOW_VAL_IS_TEST", True)
        run_train(*common, "--trainer", "TaskRes", "--output-dir", tmp / "elevater", "DATASET.NAME", "Elevater",
                  *[x for kv in REPLICA_OPTS["Elevater"].items() for x in kv])
        run_train(*common, "--trainer", "MVLPT", "--output-dir", tmp / "mt", "--dataset", "EuroSAT,DescribableTextures",
                  "--dataset-coop", "--multi-task", "--multi-task-evalkey", "EuroSAT", "TEST.FINAL_MODEL", "best_val",
                  "TRAINER.MVLPT.COOP.N_CTX", 2)
        # the builders, with every value of the keys that choose what they read
        base = _project_defaults()
        model = nn.Sequential(OrderedDict(body=nn.Linear(2, 2), head=nn.Linear(2, 2)))
        for choice in AVAI_CHOICES:
            for is_train in (True, False):
                build_transform(recording(base), is_train=is_train, choices=[choice])
        for name in AVAI_OPTIMS:
            for staged in (False, True):
                c = base.clone()
                c.OPTIM.NAME, c.OPTIM.STAGED_LR, c.OPTIM.NEW_LAYERS = name, staged, ("head",)
                optim = build_optimizer(model, recording(c).OPTIM)
        for sched in AVAI_SCHEDS:
            for warmup in ("constant", "linear"):
                c = base.clone()
                c.OPTIM.LR_SCHEDULER, c.OPTIM.WARMUP_TYPE, c.OPTIM.WARMUP_EPOCH = sched, warmup, 1
                c.OPTIM.STEPSIZE = (2,)
                build_lr_scheduler(optim, recording(c).OPTIM)
        # an unlabelled split (Dassl's TrainerXU): its loader keys and the epoch length
        c = base.clone()
        c.DATASET.ROOT, c.DATASET.NAME, c.DATALOADER.NUM_WORKERS = root, "DescribableTextures", 0
        labelled = build_dataset(c)
        for same in (True, False):
            c.DATALOADER.TRAIN_U.SAME_AS_X = same
            dm = DataManager(recording(c), dataset=DatasetBase(train_x=labelled.train_x, train_u=labelled.train_x,
                                                                test=labelled.test))
        for mode in ("train_x", "train_u", "smaller_one"):
            c.TRAIN.COUNT_ITER = mode
            xu = TrainerXU.__new__(TrainerXU)
            xu.cfg, xu.train_loader_x, xu.train_loader_u = recording(c), dm.train_loader_x, dm.train_loader_u
            xu.count_batches()
        return set(reads)


@pytest.fixture(scope="module")
def code_reads(tmp_path_factory):
    monkeypatch = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("reads")
    monkeypatch.setenv("TASKRES_CLIP_CACHE", str(tmp / "clip_cache"))
    try:
        yield _reading_scenarios(tmp, monkeypatch)
    finally:
        monkeypatch.undo()


def assert_read_or_refused(key, reads):
    """A key is read by code, or a non-default value of it is refused in one sentence."""
    if key in _UNUSED:
        cfg = _project_defaults()
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = _changed(node[leaf])
        with pytest.raises(ConfigError, match=re.escape(key) + r" is .*, but nothing here reads it"):
            check_cfg(cfg)
        return
    assert key in reads, f"{key} is neither read by any code nor refused when changed"


@pytest.mark.parametrize("key", sorted(set(ALL_KEYS) - META))
def test_every_config_key_is_read_or_refused_when_changed(key, code_reads):
    assert_read_or_refused(key, code_reads)


def test_a_key_nothing_reads_fails_the_check(tmp_path, monkeypatch):
    """Two probe keys nothing reads are not seen as read, so the check fails for them. (The old check,
    that a key's last part occurs in the code text, passed both: ``.LR`` and ``.PREC`` are read.)"""
    from yacs.config import CfgNode as CN

    from config_reads import recording_configs

    real = trainers.extend_cfg

    def with_probes(cfg, **kwargs):
        real(cfg, **kwargs)
        cfg.PROBE = CN()
        cfg.PROBE.LR = 0.5
        cfg.TRAINER.TaskRes.PROBE = CN()
        cfg.TRAINER.TaskRes.PROBE.PREC = "fp32"
        return cfg

    monkeypatch.setattr(trainers, "extend_cfg", with_probes)
    data = make_image_folder(tmp_path / "data")
    cfg = write_tiny_config(tmp_path / "cfg.yaml", tiny_clip(tmp_path), epochs=1)
    with recording_configs(monkeypatch) as reads:
        run_train("--root", data, "--trainer", "TaskRes", "--config-file", cfg, "--output-dir", tmp_path / "o",
                  "PROBE.LR", 0.7, "TRAINER.TaskRes.PROBE.PREC", "amp")
        reads = set(reads)
    assert "OPTIM.LR" in reads and "TRAINER.TaskRes.PREC" in reads  # the run did read the config
    for probe in ("PROBE.LR", "TRAINER.TaskRes.PROBE.PREC"):
        with pytest.raises(AssertionError, match=re.escape(probe) + " is neither read by any code nor refused"):
            assert_read_or_refused(probe, reads)


def test_defaults_pass_check_cfg():
    check_cfg(trainers.extend_cfg(get_cfg_default()))


# ---- one sentence, before anything heavy loads -------------------------------------------------
@pytest.fixture
def toy(tmp_path, monkeypatch):
    dassl_toys.registered(monkeypatch)
    data = make_image_folder(tmp_path / "data", per_class=8)
    return data, dassl_toys.write_toy_config(tmp_path / "toy.yaml"), tmp_path


def test_no_backbone_says_backbone(toy):
    data, cfg, tmp = toy
    with pytest.raises(ConfigError, match="No CLIP backbone given: pass --backbone"):
        run_train("--root", data, "--trainer", "TaskRes", "--config-file", cfg, "--output-dir", tmp / "o")


def test_prec_typo_is_found_before_clip_loads(toy, monkeypatch):
    import clip

    data, cfg, tmp = toy

    def no_load(*a, **k):
        raise AssertionError("CLIP was loaded before the config was checked")

    monkeypatch.setattr(clip, "load", no_load)
    with pytest.raises(ConfigError, match=r"TRAINER.TaskRes.PREC must be one of fp16, fp32, amp, got 'fp61'"):
        run_train("--root", data, "--trainer", "TaskRes", "--config-file", cfg, "--output-dir", tmp / "o",
                  "--backbone", "RN50", "TRAINER.TaskRes.PREC", "fp61")


def test_best_val_without_a_val_split_is_refused(toy, monkeypatch):
    from engine.data.datasets import DatasetBase

    data, cfg, tmp = toy
    monkeypatch.setattr(DatasetBase, "val", property(lambda self: None, lambda self, v: None), raising=False)
    with pytest.raises(ConfigError, match="TEST.FINAL_MODEL is best_val but dataset ImageFolder has no val split"):
        run_train("--root", data, "--trainer", "CoOpIdiomToy", "--config-file", cfg, "--output-dir", tmp / "o",
                  "TEST.FINAL_MODEL", "best_val")


def test_best_val_deploys_the_epoch_with_the_best_val_result(toy, monkeypatch):
    from engine.trainer import SimpleTrainer

    data, cfg, tmp = toy
    val_results = iter([40.0, 90.0, 60.0, 70.0])  # epoch 2 is the best
    real_test = SimpleTrainer.test

    def scripted_test(self, split=None):
        return next(val_results) if split == "val" else real_test(self, split)

    monkeypatch.setattr(SimpleTrainer, "test", scripted_test)
    out = tmp / "o"
    trainer = run_train("--root", data, "--seed", 1, "--trainer", "CoOpIdiomToy", "--config-file", cfg,
                        "--output-dir", out, "OPTIM.MAX_EPOCH", 4, "TEST.FINAL_MODEL", "best_val")
    best = torch.load(out / "prompt_learner" / "model-best.pth.tar", weights_only=False)
    assert best["epoch"] == 2 and best["val_result"] == 90.0
    last = torch.load(out / "prompt_learner" / "model.pth.tar-4", weights_only=False)
    # the deployed (tested) weights are epoch 2's, not the last epoch's
    deployed = trainer.model.state_dict()
    assert all(torch.equal(deployed[k], best["state_dict"][k]) for k in deployed)
    assert not all(torch.equal(deployed[k], last["state_dict"][k]) for k in deployed)
    assert "Deploy the model with the best val performance" in (out / "log.txt").read_text()


# ---- train() ends in try/finally --------------------------------------------------------------
def test_a_failing_epoch_is_logged_closes_the_writer_and_skips_the_final_test(toy, monkeypatch):
    from engine import build_trainer
    from engine.utils import close_logger, setup_logger

    data, cfg, tmp = toy
    monkeypatch.setattr(dassl_toys.CoOpIdiomToy, "stop_at_epoch", 2)
    out = tmp / "o"
    config = cfg_from(["--root", data, "--trainer", "CoOpIdiomToy", "--config-file", cfg, "--output-dir", out])
    setup_logger(str(out))
    trainer = build_trainer(config)
    try:
        with pytest.raises(RuntimeError, match="simulated crash"):
            trainer.train()
    finally:
        close_logger()
    text = (out / "log.txt").read_text()
    assert "ERROR: Training stopped by an exception in epoch 2 of 6" in text
    assert "Finish training" not in text and "* accuracy" not in text
    assert trainer._writer is None


# ---- registry, plugin trainers, training-free --------------------------------------------------
@pytest.fixture
def registry_restored(monkeypatch):
    monkeypatch.setattr(TRAINER_REGISTRY, "_obj_map", dict(TRAINER_REGISTRY._obj_map))


def test_registering_a_name_again_replaces_it_with_a_warning(registry_restored, caplog):
    ours = TRAINER_REGISTRY.get("ZeroshotCLIP")

    class ZeroshotCLIP(ours):
        pass

    TRAINER_REGISTRY.register(ZeroshotCLIP)
    assert TRAINER_REGISTRY.get("ZeroshotCLIP") is ZeroshotCLIP
    assert re.search(r'Trainer "ZeroshotCLIP" from .* replaces the one from trainers.zsclip', caplog.text)


PLUGIN = '''
"""A user's trainer folder: CoOp's ZeroshotCLIP under its own name, and a subclass under a new one."""
from yacs.config import CfgNode as CN

from engine import TRAINER_REGISTRY
from trainers.zsclip import ZeroshotCLIP as Ours

from .helper_module import TAG


def extend_cfg(cfg):
    cfg.TRAINER.MYZS = CN()
    cfg.TRAINER.MYZS.TAG = TAG


@TRAINER_REGISTRY.register()
class ZeroshotCLIP(Ours):
    user_version = True


@TRAINER_REGISTRY.register()
class ZeroshotCLIP2(Ours):
    pass
'''


@pytest.fixture
def plugin_dir(tmp_path):
    folder = tmp_path / "my_trainers"
    folder.mkdir()
    (folder / "my_zs.py").write_text(textwrap.dedent(PLUGIN))
    (folder / "helper_module.py").write_text('TAG = "from-a-sibling"\n')
    return folder


@pytest.fixture
def clip_setup(tmp_path):
    data = make_image_folder(tmp_path / "data")
    cfg = write_tiny_config(tmp_path / "cfg.yaml", tiny_clip(tmp_path), epochs=2)
    return data, cfg


@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_trainer_folder_registers_its_trainers_and_config(registry_restored, plugin_dir, clip_setup, tmp_path,
                                                            monkeypatch, how):
    data, cfg = clip_setup
    extra = []
    if how == "flag":
        extra = ["--trainer-dir", plugin_dir]
    else:
        monkeypatch.setenv("TASKRES_TRAINER_DIRS", str(plugin_dir))
    # a subclass under a new name: finds its parent's config group (PREC), runs --eval-only without --model-dir
    out = tmp_path / "zs2"
    trainer = run_train("--root", data, "--trainer", "ZeroshotCLIP2", "--config-file", cfg, "--output-dir", out,
                        "--eval-only", *extra, "TRAINER.MYZS.TAG", "set-by-user")
    assert type(trainer).__name__ == "ZeroshotCLIP2" and trainer.cfg.TRAINER.MYZS.TAG == "set-by-user"
    assert "* accuracy:" in (out / "log.txt").read_text()
    # the user's ZeroshotCLIP replaced ours
    trainer = run_train("--root", data, "--trainer", "ZeroshotCLIP", "--config-file", cfg, "--output-dir",
                        tmp_path / "zs", "--eval-only", *extra)
    assert getattr(type(trainer), "user_version", False)


def test_a_missing_trainer_folder_is_one_sentence(tmp_path):
    pattern = r"Trainer folder .*nowhere \(from --trainer-dir or \$TASKRES_TRAINER_DIRS\) does not exist"
    with pytest.raises(UserError, match=pattern):
        train.main(["--trainer-dir", str(tmp_path / "nowhere"), "--trainer", "TaskRes"])


def test_a_trainer_without_a_config_group_gets_an_empty_one(registry_restored, clip_setup, tmp_path):
    ours = TRAINER_REGISTRY.get("ZeroshotCLIP")

    class NoGroupCLIP(ours):  # no TRAINER.NoGroupCLIP group: its parent class names the group
        pass

    TRAINER_REGISTRY.register(NoGroupCLIP)
    data, cfg = clip_setup
    trainer = run_train("--root", data, "--trainer", "NoGroupCLIP", "--config-file", cfg, "--output-dir",
                        tmp_path / "o", "--eval-only")
    assert trainer.trainer_cfg() is trainer.cfg.TRAINER.ZeroshotCLIP  # the parent's group, by class name


def test_trainer_cfg_falls_back_to_an_empty_group_and_upper_case():
    from yacs.config import CfgNode as CN

    from engine import TrainerX
    from engine.trainer import trainer_group

    class CoOp(TrainerX):
        pass

    cfg = get_cfg_default()
    cfg.TRAINER.NAME = "CoOp"
    assert trainer_group(cfg, CoOp) == CN()
    cfg.TRAINER.COOP = CN({"PREC": "fp32"})
    assert trainer_group(cfg, CoOp).PREC == "fp32"  # CoOp's trainer reads TRAINER.COOP


@pytest.mark.parametrize("trainer, allowed", [("CoOpIdiomToy", False), ("NoModelToy", True)])
def test_eval_only_without_model_dir_follows_the_training_free_rule(registry_restored, toy, trainer, allowed):
    from engine import TrainerX

    class NoModelToy(TrainerX):  # registers no model: nothing to load
        def build_model(self):
            self.model = torch.nn.Flatten()

        def model_inference(self, x):
            return torch.zeros(x.shape[0], self.num_classes)

    TRAINER_REGISTRY.register(NoModelToy)
    data, cfg, tmp = toy
    argv = ["--root", data, "--trainer", trainer, "--config-file", cfg, "--output-dir", tmp / "o", "--eval-only"]
    if allowed:
        run_train(*argv)
        assert "* accuracy:" in (tmp / "o" / "log.txt").read_text()
    else:
        with pytest.raises(UserError, match="--eval-only needs --model-dir for trainer CoOpIdiomToy"):
            run_train(*argv)


def test_train_py_names_no_trainer():
    text = open(os.path.join(ROOT, "train.py")).read()
    for name in TRAINER_REGISTRY.registered_names():
        assert not re.search(rf"\b{name}\b", text), name
