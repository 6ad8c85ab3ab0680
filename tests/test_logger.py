"""engine.utils: setup_logger's files and handlers, meters, and the Dassl helper functions."""
import logging
import os
import random
import re
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import engine.utils as utils
from engine.errors import DataError
from engine.utils import (
    AverageMeter,
    MetricMeter,
    check_isfile,
    close_logger,
    count_num_param,
    listdir_nohidden,
    read_image,
    read_json,
    set_random_seed,
    setup_logger,
    write_json,
)

log = logging.getLogger("engine.test_logger")


@pytest.fixture(autouse=True)
def _close_logger():
    yield
    close_logger()


def our_handlers():
    return [h for h in logging.getLogger().handlers if getattr(h, "_engine_setup_logger", False)]


def test_log_txt_in_output_folder(tmp_path, capsys):
    path = setup_logger(str(tmp_path / "run"))
    assert path == str(tmp_path / "run" / "log.txt")
    log.info("* accuracy: 12.3%")
    assert open(path).read() == "* accuracy: 12.3%\n"  # the bare message, like Dassl's tee
    assert "* accuracy: 12.3%" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["train.log", "notes.txt"])
def test_explicit_file_name(tmp_path, name):
    path = setup_logger(str(tmp_path / name))
    assert path == str(tmp_path / name)
    log.info("hello")
    assert open(path).read() == "hello\n"


def test_a_second_run_appends_to_log_txt_after_a_separator(tmp_path):
    first = setup_logger(str(tmp_path))
    log.info("first run")
    second = setup_logger(str(tmp_path))
    log.info("second run")
    close_logger()
    assert first == second == str(tmp_path / "log.txt")
    assert os.listdir(tmp_path) == ["log.txt"]  # no log.txt-<date>: parse_test_res reads only log.txt
    lines = open(first).read().splitlines()
    assert lines[0] == "first run" and lines[-1] == "second run"
    assert re.fullmatch(r"=+ new run in this folder, \d{4}-\d\d-\d\d \d\d:\d\d:\d\d =+", lines[-2])


def test_print_reaches_log_txt_and_the_terminal_in_order(tmp_path, capsys):
    path = setup_logger(str(tmp_path))
    log.info("logged before")
    print("printed by a Dassl-style trainer")
    log.info("logged after")
    close_logger()
    print("after close: terminal only")
    assert open(path).read() == "logged before\nprinted by a Dassl-style trainer\nlogged after\n"
    out = capsys.readouterr().out
    assert "printed by a Dassl-style trainer" in out and "after close: terminal only" in out


def test_warning_lines_carry_their_level(tmp_path):
    path = setup_logger(str(tmp_path))
    log.info("* accuracy: 1.0%")
    log.warning("a class is short")
    close_logger()
    assert open(path).read() == "* accuracy: 1.0%\nWARNING: a class is short\n"


def test_one_handler_pair_after_repeated_setup(tmp_path):
    for _ in range(3):
        setup_logger(str(tmp_path))
    handlers = our_handlers()
    assert len(handlers) == 2
    assert sum(isinstance(h, logging.FileHandler) for h in handlers) == 1
    close_logger()
    assert our_handlers() == []


def test_warnings_are_captured(tmp_path):
    path = setup_logger(str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("fp16 is not supported on CPU, using fp32")
    close_logger()
    assert "fp16 is not supported on CPU, using fp32" in open(path).read()


def test_no_output_logs_to_stdout_only(capsys):
    assert setup_logger(None) is None
    log.info("console only")
    assert "console only" in capsys.readouterr().out
    assert not any(isinstance(h, logging.FileHandler) for h in our_handlers())


def test_average_meter():
    meter = AverageMeter()
    meter.update(torch.tensor(2.0), n=2)
    meter.update(5.0)
    assert (meter.val, meter.sum, meter.count) == (5.0, 9.0, 3)
    assert meter.avg == pytest.approx(3.0)
    meter.reset()
    assert meter.count == 0 and meter.avg == 0


def test_metric_meter_str():
    meter = MetricMeter()
    meter.update({"loss": torch.tensor(0.2345), "acc": 50.0})
    meter.update({"loss": 0.1234, "acc": 100.0})
    assert str(meter) == "loss 0.1234 (0.1790)\tacc 100.0000 (75.0000)"
    with pytest.raises(TypeError, match="dict"):
        meter.update([1.0])


def test_set_random_seed_repeats_every_rng():
    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item()

    set_random_seed(7)
    a = draw()
    set_random_seed(7)
    assert draw() == a
    set_random_seed(8)
    assert draw() != a


def test_json_round_trip_and_errors(tmp_path):
    path = str(tmp_path / "sub" / "split.json")
    write_json({"train": [["a.jpg", 0, "cat"]]}, path)
    assert read_json(path) == {"train": [["a.jpg", 0, "cat"]]}
    assert [p for p in os.listdir(tmp_path / "sub")] == ["split.json"]  # no temp file left behind
    (tmp_path / "bad.json").write_text('{"train": [')
    with pytest.raises(DataError, match=r"bad\.json.*malformed"):
        read_json(str(tmp_path / "bad.json"))
    with pytest.raises(DataError, match="missing.json"):
        read_json(str(tmp_path / "missing.json"))


def test_read_image(tmp_path):
    gray = tmp_path / "gray.png"
    Image.new("L", (5, 4), color=100).save(gray)
    img = read_image(str(gray))
    assert img.mode == "RGB" and img.size == (5, 4)
    assert img.getpixel((0, 0)) == (100, 100, 100)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="corrupt.jpg"):
        read_image(str(corrupt))
    with pytest.raises(DataError, match="nothere.jpg"):
        read_image(str(tmp_path / "nothere.jpg"))


def test_listdir_check_isfile_count(tmp_path):
    for name in ["b", "a", ".hidden"]:
        (tmp_path / name).write_text("x")
    assert listdir_nohidden(str(tmp_path), sort=True) == ["a", "b"]
    assert check_isfile(str(tmp_path / "a"))
    with pytest.warns(UserWarning, match="No file found"):
        assert not check_isfile(str(tmp_path / "zzz"))
    assert count_num_param(torch.nn.Linear(3, 2)) == 8


def test_dassl_names_are_exported():
    for name in [
        "setup_logger", "set_random_seed", "mkdir_if_missing", "check_isfile", "read_json", "write_json",
        "listdir_nohidden", "read_image", "count_num_param", "AverageMeter", "MetricMeter",
    ]:
        assert callable(getattr(utils, name)), name
    assert sys.modules["engine.utils"] is utils


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_get_the_mode_a_plain_open_gets_under_the_umask(tmp_path, umask, mode):
    from engine.utils import atomic_write_text

    old = os.umask(umask)
    try:
        atomic_write_text(str(tmp_path / "results.json"), "{}")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "results.json").st_mode & 0o777 == mode
