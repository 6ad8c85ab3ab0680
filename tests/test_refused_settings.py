"""Settings that used to crash with a traceback or silently mislead: each is refused in one sentence
before anything loads (table-driven, the messages asserted), or keeps Dassl's meaning and says it
in log.txt and records it in config.yaml (SEED < 0, NUM_SHOTS < 1, best_val where val is test)."""
import glob
import os
import re

import pytest
import yaml

import trainers  # noqa: F401  (registers the trainers)
from dataset_replicas import build_replica
from engine.errors import ConfigError
from helpers import accuracies, run_train, tiny_clip, write_tiny_config


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("refused")
    root = build_replica("DescribableTextures", tmp / "data")
    build_replica("ImageNet", tmp / "data")
    cfg = write_tiny_config(tmp / "cfg.yaml", tiny_clip(tmp), dataset="DescribableTextures", epochs=2, batch=4)
    return root, cfg


def run(setup, out, *opts, trainer="TaskRes", seed=1):
    root, cfg = setup
    seed_flag = [] if seed is None else ["--seed", seed]
    return run_train("--root", root, *seed_flag, "--trainer", trainer, "--config-file", cfg, "--output-dir", out,
                     "DATASET.NUM_SHOTS", 1, *opts)


REFUSED = [  # (trainer, opts, the sentence)
    ("TaskRes", ["OPTIM.LR", -1], "OPTIM.LR is -1.0, but a learning rate must be positive (e.g. 0.002)."),
    ("CoOp", ["OPTIM.LR", 0], "OPTIM.LR is 0.0, but a learning rate must be positive (e.g. 0.002)."),
    ("TaskRes", ["OPTIM.WEIGHT_DECAY", -0.1], "OPTIM.WEIGHT_DECAY is -0.1, but it must be 0 or positive."),
    ("TaskRes", ["OPTIM.MOMENTUM", -1], "OPTIM.MOMENTUM is -1.0, but it must be 0 or positive (e.g. 0.9)."),
    ("TaskRes", ["OPTIM.ADAM_BETA2", 1], "OPTIM.ADAM_BETA2 is 1.0, but it must be in [0, 1) (Adam's defaults: 0.9, 0.999)."),
    ("TaskRes", ["OPTIM.GAMMA", 0], "OPTIM.GAMMA is 0.0, but the LR decay factor must be positive (e.g. 0.1)."),
    ("TaskRes", ["OPTIM.MAX_EPOCH", 0], "OPTIM.MAX_EPOCH is 0, so TaskRes would record an untrained model as a "
                                        "finished run; give at least 1 epoch (or evaluate a trained run with --eval-only)."),
    ("CLIP_Adapter", ["OPTIM.MAX_EPOCH", -2], "OPTIM.MAX_EPOCH is -2, so CLIP_Adapter would record an untrained model"),
    ("TipAdapterF", ["OPTIM.MAX_EPOCH", 0], "OPTIM.MAX_EPOCH is 0, so TipAdapterF would record an untrained model"),
    ("TaskRes", ["OPTIM.WARMUP_EPOCH", 5], "OPTIM.WARMUP_EPOCH is 5 but OPTIM.MAX_EPOCH is 2, so the whole run would be "
                                           "warm-up; lower OPTIM.WARMUP_EPOCH (or -1 for no warm-up)."),
    ("TaskRes", ["DATALOADER.TRAIN_X.BATCH_SIZE", 0],
     "DATALOADER.TRAIN_X.BATCH_SIZE is 0, but it must be a positive batch size; set it to at least 1."),
    ("ZeroshotCLIP", ["DATALOADER.TEST.BATCH_SIZE", 0],
     "DATALOADER.TEST.BATCH_SIZE is 0, but it must be a positive batch size; set it to at least 1."),
    ("TaskRes", ["DATALOADER.NUM_WORKERS", -1], "DATALOADER.NUM_WORKERS is -1, but it must be 0 (load in the main "
                                                "process) or a positive number of worker processes."),
    ("TaskRes", ["TRAIN.PRINT_FREQ", 0], "TRAIN.PRINT_FREQ is 0, but it must be a positive number of batches between "
                                         "progress lines; set it to at least 1."),
    ("TaskRes", ["INPUT.SIZE", "(0, 224)"], "INPUT.SIZE is (0, 224), but it must be two positive sizes"),
    ("TaskRes", ["DATASET.NUM_SHOTS", -3], "DATASET.NUM_SHOTS is -3; give a positive number of images per class, or -1 "
                                           "(Dassl's default) for the full train set."),
    ("TaskRes", ["DATASET.TEST_SUBSET", 0], "DATASET.TEST_SUBSET is 0; give a positive number of test images per class"),
    ("TaskRes", ["FEATURE_CACHE.TRAIN_VIEWS", 0], "FEATURE_CACHE.TRAIN_VIEWS is 0, but it must be a positive number of "
                                                  "augmented views per training image; set it to at least 1."),
    ("TaskRes", ["FEATURE_CACHE.ENCODE_BATCH_SIZE", 0], "FEATURE_CACHE.ENCODE_BATCH_SIZE is 0, but it must be a "
                                                        "positive encoding batch size"),
    # a key of another trainer's group: it would be ignored
    ("TaskRes", ["TRAINER.COOP.N_CTX", 4], "TRAINER.COOP.N_CTX is 4, but trainer TaskRes does not read it (read by "
                                           "CoOp, KgCoOp, ProGrad); remove it, or run --trainer CoOp."),
    ("CoOp", ["TRAINER.TaskRes.RESIDUAL_SCALE", 0.5], "TRAINER.TaskRes.RESIDUAL_SCALE is 0.5, but trainer CoOp does "
                                                      "not read it (read by TaskRes); remove it, or run --trainer TaskRes."),
    ("LinearProbe", ["TRAINER.TIP_ADAPTER.INIT_ALPHA", 2.0], "TRAINER.TIP_ADAPTER.INIT_ALPHA is 2.0, but trainer "
                                                             "LinearProbe does not read it (read by TipAdapter, TipAdapterF)"),
    ("TaskRes", ["TRAINER.CUT_CONTEXTLEN", True], "TRAINER.CUT_CONTEXTLEN is True, but trainer TaskRes does not read it "
                                                  "(read by MVLPT)"),
]


@pytest.mark.parametrize("trainer, opts, sentence", REFUSED, ids=[f"{t}-{o[0]}={o[1]}" for t, o, _ in REFUSED])
def test_a_bad_value_is_one_sentence_before_anything_loads(setup, tmp_path, trainer, opts, sentence):
    with pytest.raises(ConfigError) as info:
        run(setup, tmp_path / "out", *opts, trainer=trainer)
    text = str(info.value)
    assert text.startswith(sentence) and text.endswith(".") and "\n" not in text
    assert not (tmp_path / "out" / "config.yaml").exists()


def test_training_free_trainers_ignore_the_training_keys(setup, tmp_path):
    """ZeroshotCLIP trains nothing, so OPTIM.MAX_EPOCH 0 (or a learning rate of -1) is no error there."""
    run(setup, tmp_path / "out", "OPTIM.MAX_EPOCH", 0, "OPTIM.LR", -1, trainer="ZeroshotCLIP")
    assert len(accuracies(tmp_path / "out" / "log.txt")) == 1


def test_the_trainer_keys_of_the_trainer_itself_and_its_parents_are_accepted(setup, tmp_path):
    """ZeroshotCLIP2 inherits ZeroshotCLIP's group; the check only refuses groups nobody in its family reads."""
    run(setup, tmp_path / "out", "TRAINER.ZeroshotCLIP.PREC", "fp32", trainer="ZeroshotCLIP2")
    assert len(accuracies(tmp_path / "out" / "log.txt")) == 1


# ---- SEED < 0: Dassl's "not seeded" becomes a drawn seed, logged and recorded --------------------
def fewshot_files(root):
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(root, "*", "split_fewshot", "*.json")))


def test_a_negative_seed_draws_one_logs_it_and_records_it(setup, tmp_path):
    root, _ = setup
    seeds = []
    for i in range(2):
        out = tmp_path / f"run{i}"
        run(setup, out, seed=-1)
        seed = yaml.safe_load((out / "config.yaml").read_text())["SEED"]
        assert seed >= 0
        log = (out / "log.txt").read_text()
        assert (f"SEED was negative (Dassl: not seeded): drew seed {seed} at random, recorded in config.yaml; "
                f"pass --seed {seed} to repeat this run") in log
        assert f"Setting fixed seed: {seed}" in log
        seeds.append(seed)
    assert seeds[0] != seeds[1]  # each "random" run draws its own sample ...
    files = fewshot_files(root)
    assert all(f"shot_1-seed_{s}.json" in files for s in seeds)  # ... cached under its real seed
    assert not any("seed_-1" in f for f in files)


def test_a_run_repeated_with_the_drawn_seed_gives_the_same_numbers(setup, tmp_path):
    run(setup, tmp_path / "drawn", seed=-1)
    seed = yaml.safe_load((tmp_path / "drawn" / "config.yaml").read_text())["SEED"]
    run(setup, tmp_path / "again", seed=seed)
    assert accuracies(tmp_path / "drawn" / "log.txt") == accuracies(tmp_path / "again" / "log.txt")


def test_seed_0_is_a_fixed_seed_as_in_dassl(setup, tmp_path):
    run(setup, tmp_path / "out", seed=0)
    log = (tmp_path / "out" / "log.txt").read_text()
    assert "Setting fixed seed: 0" in log and "drew seed" not in log


# ---- NUM_SHOTS < 1: Dassl's full train set, said in the log -----------------------------------
@pytest.mark.parametrize("shots", [0, -1])
def test_num_shots_below_1_trains_on_the_full_set_and_says_so(setup, tmp_path, shots):
    trainer = run(setup, tmp_path / "out", "DATASET.NUM_SHOTS", shots)
    n = len(trainer.dm.dataset.train_x)
    assert n > 4 * 1  # more than one image per class: the whole train split
    log = (tmp_path / "out" / "log.txt").read_text()
    assert (f"WARNING: DATASET.NUM_SHOTS is {shots}: not a few-shot run, the full train set ({n} images) is used "
            "(Dassl's meaning of NUM_SHOTS < 1)") in log
    assert yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())["DATASET"]["NUM_SHOTS"] == shots


# ---- best_val where the val split is the test split (CoOp's ImageNet) ---------------------------
def test_best_val_on_imagenet_is_refused(setup, tmp_path):
    pattern = (r"^TEST.FINAL_MODEL is best_val, but dataset ImageNet's val split is its test split \(as in CoOp\), so "
               r"the model would be selected on the test set; use TEST.FINAL_MODEL last_step, or set "
               r"TEST.ALLOW_VAL_IS_TEST True to do it on purpose \(e.g. to reproduce a paper that did\)\.$")
    with pytest.raises(ConfigError, match=pattern):
        run(setup, tmp_path / "out", "DATASET.NAME", "ImageNet", "TEST.FINAL_MODEL", "best_val")
    assert not (tmp_path / "out" / "config.yaml").exists()


def test_best_val_on_imagenet_allowed_on_purpose_warns_and_is_recorded(setup, tmp_path):
    out = tmp_path / "out"
    run(setup, out, "DATASET.NAME", "ImageNet", "TEST.FINAL_MODEL", "best_val", "TEST.ALLOW_VAL_IS_TEST", True)
    log = (out / "log.txt").read_text()
    assert re.search(r"WARNING: TEST.FINAL_MODEL is best_val and dataset ImageNet's val split is its test split: the "
                     r"model is selected on the test set \(allowed by TEST.ALLOW_VAL_IS_TEST\)", log)
    test = yaml.safe_load((out / "config.yaml").read_text())["TEST"]
    assert test["ALLOW_VAL_IS_TEST"] is True and test["FINAL_MODEL"] == "best_val"
    assert len(accuracies(out / "log.txt")) > 1  # val results per epoch, then the test result


def test_best_val_on_a_real_val_split_needs_no_permission(setup, tmp_path):
    run(setup, tmp_path / "out", "TEST.FINAL_MODEL", "best_val")
    assert "val split is its test split" not in (tmp_path / "out" / "log.txt").read_text()


# ---- messages -------------------------------------------------------------------------------------
def test_the_short_class_warning_of_datasets_check_names_the_val_draw(setup, caplog):
    """DTD's replica has 4 train and 2 val images per class: at 8 shots both draws are short, and
    each warning says which draw it is about (the val one takes min(NUM_SHOTS, 4), not NUM_SHOTS)."""
    import datasets.check

    root, _ = setup
    caplog.set_level("WARNING")
    assert datasets.check.main(["--root", root, "--dataset", "DescribableTextures", "--num-shots", "8", "--seed", "7"]) == 0
    text = caplog.text
    assert "4 classes have fewer than NUM_SHOTS=8 training images, all of theirs are used: banded (4)" in text
    assert ("The few-shot val draw takes min(NUM_SHOTS, 4) = 4 images per class, but 4 classes have fewer in the val "
            "split, so all of theirs are used: banded (2)") in text
    assert "fewer than NUM_SHOTS=4" not in text


def test_a_user_trainer_outside_the_package_gets_a_warning_not_a_refusal(setup, tmp_path, monkeypatch):
    """What a --trainer-dir file reads is not known here: another group's key is a warning naming
    reads_keys; declaring it silences the warning."""
    from engine import TRAINER_REGISTRY
    from trainers.taskres import TaskRes

    monkeypatch.setattr(TRAINER_REGISTRY, "_obj_map", dict(TRAINER_REGISTRY._obj_map))

    @TRAINER_REGISTRY.register()
    class PortedTaskRes(TaskRes):
        pass

    @TRAINER_REGISTRY.register()
    class PortedReadsCoOp(TaskRes):
        reads_keys = ("TRAINER.COOP",)

    run(setup, tmp_path / "a", "TRAINER.COOP.N_CTX", 4, trainer="PortedTaskRes")
    log = (tmp_path / "a" / "log.txt").read_text()
    assert ("WARNING: TRAINER.COOP.N_CTX is 4, but trainer PortedTaskRes may not read it (read by CoOp, KgCoOp, "
            'PortedReadsCoOp, ProGrad); if it does, declare reads_keys = ("TRAINER.COOP",) on the trainer class, else '
            "remove it") in log
    run(setup, tmp_path / "b", "TRAINER.COOP.N_CTX", 4, trainer="PortedReadsCoOp")
    assert "may not read it" not in (tmp_path / "b" / "log.txt").read_text()


def test_the_same_negative_seed_command_again_resumes_with_the_recorded_seed(setup, tmp_path):
    """Run again to resume (README): the seed drawn first, recorded in config.yaml, is used again, so
    the resumed run trains on the draw its checkpoint came from."""
    out = tmp_path / "out"
    run(setup, out, "OPTIM.MAX_EPOCH", 1, seed=-1)
    first = yaml.safe_load((out / "config.yaml").read_text())["SEED"]
    run(setup, out, "OPTIM.MAX_EPOCH", 1, seed=-1)
    assert yaml.safe_load((out / "config.yaml").read_text())["SEED"] == first
    assert not list(out.glob("config.yaml-*"))  # the same config: nothing set aside
    log = (out / "log.txt").read_text()
    assert (f"SEED was negative (Dassl: not seeded): using seed {first}, the one drawn by the earlier run recorded "
            f"in {out}/config.yaml") in log
