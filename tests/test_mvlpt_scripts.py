"""scripts/mvlpt/ (source and target workflows, avg_ckpt.py) and summarize.py's MVLPT section.

Dry runs pin the commands (the original scripts' opts per prompt kind, collision-free folders);
one end-to-end pass on replicas with a tiny CLIP runs source seeds -> seed average -> target
from the averaged prompt -> summary, and a second pass skips every finished run.
"""
import os
import shlex
import subprocess
import sys

import pytest
import torch

from dataset_replicas import build_replica
from engine.utils.checkpoint import load_checkpoint, save_checkpoint
from helpers import ROOT, accuracies, tiny_clip

MT = "scripts/mvlpt/main_mt_coopdata_cut.sh"
SINGLE = "scripts/mvlpt/main_single_coopdata_cut.sh"
SOURCES_11 = ("ImageNet,Caltech101,Food101,StanfordCars,OxfordPets,OxfordFlowers,FGVCAircraft,SUN397,"
              "DescribableTextures,EuroSAT,UCF101")


def run_script(script, *args, env=None, timeout=600):
    full_env = {k: v for k, v in os.environ.items() if k not in ("DATA", "OUTPUT", "PYTHON")}
    full_env.update({"TR_RUNNER_PYTHON": sys.executable, **(env or {})})  # the planner's python
    return subprocess.run(["bash", script, *map(str, args)], cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def dry_run(script, *args, output):
    proc = run_script(script, "--dry-run", *args, env={"DATA": "/datasets", "OUTPUT": str(output), "PYTHON": "false"})
    assert proc.returncode == 0, proc.stderr
    return [shlex.split(line) for line in proc.stdout.splitlines()]


def opt(cmd, key):
    return cmd[cmd.index(key) + 1]


@pytest.mark.parametrize("kind, vpt, coop, cut", [("CoOp", "0", "16", True), ("VPT", "16", "0", False),
                                                  ("UPT", "4", "4", True)])
def test_source_commands_follow_the_original_per_kind(tmp_path, kind, vpt, coop, cut):
    nctx = coop if kind != "VPT" else vpt
    cmds = dry_run(MT, kind, "vit_b16", nctx, 5, "--seeds", "1 2 3", output=tmp_path)
    assert [opt(c, "--seed") for c in cmds] == ["1", "2", "3"]
    c = cmds[0]
    assert opt(c, "--dataset") == SOURCES_11 and "--multi-task" in c and "--dataset-coop" in c
    assert opt(c, "--trainer") == "MVLPT" and opt(c, "--shots") == "5" and "--backbone" not in c
    assert opt(c, "--config-file") == "configs/trainers/MVLPT/vit_b16.yaml"
    assert opt(c, "TRAINER.MVLPT.VPT.N_CTX") == vpt and opt(c, "TRAINER.MVLPT.COOP.N_CTX") == coop
    assert opt(c, "TRAINER.MVLPT.COOP.CLASS_TOKEN_POSITION") == "middle" and opt(c, "TEST.FINAL_MODEL") == "best_val"
    assert opt(c, "TEST.ALLOW_VAL_IS_TEST") == "True"  # ImageNet's val is its test split: selected on it on purpose
    assert ("TRAINER.CUT_CONTEXTLEN" in c) == cut
    assert opt(c, "--output-dir") == (f"{tmp_path}/{SOURCES_11}/MVLPT/{kind}/vit_b16_5shots/"
                                      f"nctx{nctx}_cscFalse_ctpmiddle/seed1")


def test_target_folders_name_their_source(tmp_path):
    default = dry_run(SINGLE, "CoOp", "vit_b16", 16, 5, "eurosat", "--seeds", "1", output=tmp_path)[0]
    other = dry_run(SINGLE, "CoOp", "vit_b16", 16, 5, "eurosat", "--seeds", "1", "--sources", "eurosat dtd",
                    output=tmp_path)[0]
    scratch = dry_run(SINGLE, "CoOp", "vit_b16", 16, 5, "eurosat", "--seeds", "1", "--scratch", output=tmp_path)[0]
    assert opt(default, "--model-dir") == f"{tmp_path}/{SOURCES_11}/MVLPT/CoOp/vit_b16_5shots/nctx16_cscFalse_ctpmiddle"
    assert opt(other, "--model-dir").endswith("/EuroSAT,DescribableTextures/MVLPT/CoOp/vit_b16_5shots/"
                                              "nctx16_cscFalse_ctpmiddle")
    assert "--model-dir" not in scratch and "--multi-task" not in default and opt(default, "--dataset") == "EuroSAT"
    dirs = {opt(c, "--output-dir") for c in (default, other, scratch)}
    assert len(dirs) == 3  # three sources, three folders
    assert opt(scratch, "--output-dir").endswith("/EuroSAT/MVLPT/CoOp/vit_b16_5shots/"
                                                 "nctx16_cscFalse_ctpmiddle_init-scratch/seed1")


@pytest.mark.parametrize("script, args, message", [
    (MT, ("CoOPP", "vit_b16", 16, 5), "TRAINER 'CoOPP' is not one of CoOp, VPT, UPT"),
    (MT, ("CoOp", "vit_b17", 16, 5), "CFG 'vit_b17' is not a file in configs/trainers/MVLPT/"),
    (MT, ("CoOp", "vit_b16", 16, 5, "--", "TRAINER.MVLPT.COOP.N_CTX", 8),
     "pass NCTX instead of TRAINER.MVLPT.COOP.N_CTX after --"),
    (SINGLE, ("CoOp", "vit_b16", 16, 5, "eurosat", "--seeds", 1),
     "no source prompt at"),
    (SINGLE, ("CoOp", "vit_b16", 16, 5, "eurosat", "--sources", "dtd EuroSAT", "--dry-run"),
     "--sources: 'EuroSAT' is not valid"),
])
def test_bad_arguments_are_one_sentence(tmp_path, script, args, message):
    proc = run_script(script, *args, env={"DATA": str(tmp_path), "OUTPUT": str(tmp_path), "PYTHON": "false"})
    assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_avg_ckpt_averages_seeds_and_names_a_missing_one(tmp_path):
    from scripts.mvlpt.avg_ckpt import main

    run = tmp_path / "run"
    for seed, value in ((1, 1.0), (2, 3.0)):
        save_checkpoint({"state_dict": {"ctx": torch.full((2, 4), value)}, "epoch": seed + 1, "val_result": 10.0 * seed,
                         "optimizer": {"x": 1}, "scheduler": None},
                        str(run / f"seed{seed}" / "prompt_learner"), model_name="model-best.pth.tar")
    assert main([str(run), "--seeds", "1", "2"]) == 0
    avg = load_checkpoint(str(run / "prompt_learner" / "model-best.pth.tar"))
    torch.testing.assert_close(avg["state_dict"]["ctx"], torch.full((2, 4), 2.0))
    assert (avg["epoch"], avg["val_result"], avg["optimizer"]) == (2, 15.0, None)
    assert main([str(run), "--seeds", "1", "2", "3"]) == 2  # seed 3 missing: nothing written over


def test_source_average_target_summary_end_to_end(tmp_path):
    data = str(tmp_path / "data")
    for name in ("EuroSAT", "DescribableTextures", "OxfordPets"):
        build_replica(name, data)
    clip_file = tiny_clip(tmp_path, "vit")
    env = {"DATA": data, "OUTPUT": str(tmp_path / "out")}
    tiny = ["--", "INPUT.SIZE", "(32, 32)", "OPTIM.MAX_EPOCH", "2", "DATALOADER.NUM_WORKERS", "0",
            "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "DATALOADER.TEST.BATCH_SIZE", "16", "TRAINER.MVLPT.PREC", "fp32",
            "FEATURE_CACHE.DIR", str(tmp_path / "features")]
    common = ("--seeds", "1 2", "--backbone", clip_file)
    mt = run_script(MT, "VPT", "vit_b16", 2, 2, "--datasets", "eurosat dtd", *common, *tiny, env=env)
    assert mt.returncode == 0, mt.stderr
    source = tmp_path / "out" / "EuroSAT,DescribableTextures" / "MVLPT" / "VPT" / "vit_b16_tiny_vit_2shots" / \
        "nctx2_cscFalse_ctpmiddle"
    assert len(accuracies(source / "seed2" / "log.txt")) > 0
    proc = subprocess.run([sys.executable, "scripts/mvlpt/avg_ckpt.py", str(source), "--seeds", "1", "2"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    target = run_script(SINGLE, "VPT", "vit_b16", 2, 2, "oxford_pets", "--sources", "eurosat dtd", *common, *tiny,
                        env=env)
    assert target.returncode == 0, target.stderr
    runs = list((tmp_path / "out" / "OxfordPets" / "MVLPT" / "VPT" / "vit_b16_tiny_vit_2shots").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("nctx2_cscFalse_ctpmiddle_init-src")
    log = (runs[0] / "seed1" / "log.txt").read_text()
    assert f'from "{source}/prompt_learner/model-best.pth.tar"' in log  # started from the averaged prompt

    again = run_script(MT, "VPT", "vit_b16", 2, 2, "--datasets", "eurosat dtd", *common, *tiny, env=env)
    assert again.stderr.count("skip (finished)") == 2

    from scripts.summarize import main as summarize

    assert summarize([str(tmp_path / "out"), "--out", str(tmp_path / "summary")]) == 0
    table = (tmp_path / "summary" / "mvlpt.md").read_text()
    assert "| OxfordPets | target | VPT | vit_b16_tiny_vit | 2 |" in table
    assert "| EuroSAT,DescribableTextures | source | VPT |" in table and "(n=2)" in table


MT_ELEVATER = "scripts/mvlpt/main_mt_elevater_cut.sh"
SINGLE_ELEVATER = "scripts/mvlpt/main_single_elevater_cut.sh"
# the original main_mt_elevater_cut.sh's DATASET, less voc-2007-classification (multi-label)
ELEVATER_19 = ("hateful-memes,cifar-10,mnist,oxford-flower-102,oxford-iiit-pets,resisc45_clip,country211,food-101,"
               "stanford-cars,caltech-101,dtd,cifar-100,fgvc-aircraft-2013b-variants102,patch-camelyon,"
               "rendered-sst2,gtsrb,eurosat_clip,fer-2013,kitti-distance")


@pytest.mark.parametrize("kind, opts", [
    ("CoOp", {"TRAINER.MVLPT.VPT.N_CTX": "0", "TRAINER.MVLPT.COOP.N_CTX": "4", "TRAINER.CUT_CONTEXTLEN": "True"}),
    ("COCOOP", {"TRAINER.MVLPT.COCOOP.N_CTX": "4"}),
])
def test_elevater_source_commands_follow_the_original(tmp_path, kind, opts):
    cmds = dry_run(MT_ELEVATER, kind, "vit_b16", 4, 5, "--seeds", "1 2", output=tmp_path)
    c = cmds[0]
    assert [opt(x, "--seed") for x in cmds] == ["1", "2"]
    assert opt(c, "--dataset") == ELEVATER_19 and "--multi-task" in c and "--dataset-coop" not in c
    assert all(opt(c, k) == v for k, v in opts.items()) and opt(c, "TEST.FINAL_MODEL") == "best_val"
    assert ("TRAINER.MVLPT.COOP.CSC" in c) == (kind != "COCOOP")  # the original's COCOOP branch passes none
    assert opt(c, "--output-dir") == f"{tmp_path}/ELEVATER/MVLPT/{kind}/vit_b16_5shots/nctx4_cscFalse_ctpmiddle/seed1"
    other = dry_run(MT_ELEVATER, kind, "vit_b16", 4, 5, "--seeds", "1", "--datasets", "cifar-10  dtd",
                    output=tmp_path)[0]
    assert opt(other, "--dataset") == "cifar-10,dtd" and "/ELEVATER-" in opt(other, "--output-dir")


def test_elevater_target_commands(tmp_path):
    default = dry_run(SINGLE_ELEVATER, "CoOp", "vit_b16", 16, 5, "cifar-10", "--seeds", "1", output=tmp_path)[0]
    assert opt(default, "--dataset") == "cifar-10" and "--dataset-coop" not in default
    # as the original: the target starts from the CoOp-data source run
    assert opt(default, "--model-dir") == f"{tmp_path}/{SOURCES_11}/MVLPT/CoOp/vit_b16_5shots/nctx16_cscFalse_ctpmiddle"
    elevater = dry_run(SINGLE_ELEVATER, "CoOp", "vit_b16", 16, 5, "cifar-10", "--seeds", "1", "--elevater-sources",
                       "cifar-10 dtd", output=tmp_path)[0]
    assert "/ELEVATER-" in opt(elevater, "--model-dir") and opt(elevater, "--output-dir") != opt(default, "--output-dir")
    cocoop = dry_run(SINGLE_ELEVATER, "COCOOP", "vit_b16", 4, 5, "dtd", "--seeds", "1", output=tmp_path)[0]
    assert "--model-dir" not in cocoop and opt(cocoop, "--output-dir").endswith("_init-scratch/seed1")


@pytest.mark.parametrize("script, args, message", [
    (MT_ELEVATER, ("CoOp", "vit_b16", 4, 5, "--datasets", "cifar-10 voc-2007-classification"),
     "--datasets 'voc-2007-classification' is multi-label"),
    (MT_ELEVATER, ("CoOp", "vit_b16", 4, 5, "--datasets", "cifar-10 eurosat"), "--datasets 'eurosat' is not an ELEVATER"),
    (SINGLE_ELEVATER, ("CoOp", "vit_b16", 4, 5, "EuroSAT", "--scratch"), "DATASET 'EuroSAT' is not an ELEVATER"),
    (MT, ("COCOOP", "vit_b16", 4, 5), "TRAINER 'COCOOP' is only taken by the ELEVATER scripts"),
    (MT_ELEVATER, ("CoOp", "vit_b16", 4, 5, "--", "TRAINER.MVLPT.COCOOP.N_CTX", 8), "pass NCTX instead of"),
    (MT_ELEVATER, ("CoOp", "vit_b16", 4, 5, "--datasets", " "), "--datasets needs at least one value"),
    (SINGLE_ELEVATER, ("COCOOP", "vit_b16", 4, 5, "dtd", "--sources", "eurosat", "--elevater-sources", "dtd"),
     "--sources and --elevater-sources exclude each other"),
])
def test_elevater_bad_arguments_are_one_sentence(tmp_path, script, args, message):
    proc = run_script(script, *args, env={"DATA": str(tmp_path), "OUTPUT": str(tmp_path), "PYTHON": "false"})
    assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_elevater_source_then_target_end_to_end(tmp_path):
    from dataset_replicas import elevater_coco, elevater_iris

    data = str(tmp_path / "data")
    elevater_iris(data)
    elevater_coco(data)
    clip_file = tiny_clip(tmp_path, "vit")
    env = {"DATA": data, "OUTPUT": str(tmp_path / "out")}
    tiny = ["--", "INPUT.SIZE", "(32, 32)", "OPTIM.MAX_EPOCH", "1", "DATALOADER.NUM_WORKERS", "0",
            "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "DATALOADER.TEST.BATCH_SIZE", "16", "TRAINER.MVLPT.PREC", "fp32",
            "FEATURE_CACHE.DIR", str(tmp_path / "features")]
    common = ("--seeds", "1", "--backbone", clip_file)
    mt = run_script(MT_ELEVATER, "CoOp", "vit_b16", 2, 2, "--datasets", "cifar-10 resisc45_clip", *common, *tiny, env=env)
    assert mt.returncode == 0, mt.stderr
    source = next((tmp_path / "out").glob("ELEVATER-*/MVLPT/CoOp/vit_b16_tiny_vit_2shots/nctx2_cscFalse_ctpmiddle"))
    log = (source / "seed1" / "log.txt").read_text()
    assert "evaluate on the *cifar-10* !" in log and "evaluate on the *resisc45_clip* !" in log
    proc = subprocess.run([sys.executable, "scripts/mvlpt/avg_ckpt.py", str(source), "--seeds", "1"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    target = run_script(SINGLE_ELEVATER, "CoOp", "vit_b16", 2, 2, "cifar-10", "--elevater-sources",
                        "cifar-10 resisc45_clip", *common, *tiny, env=env)
    assert target.returncode == 0, target.stderr
    run = next((tmp_path / "out" / "cifar-10" / "MVLPT" / "CoOp" / "vit_b16_tiny_vit_2shots").iterdir())
    log = (run / "seed1" / "log.txt").read_text()
    assert f'from "{source}/prompt_learner/model-best.pth.tar"' in log
    assert log.splitlines()[-2].startswith("results {'accuracy': ")  # cifar-10's ELEVATER metric, the original's line
