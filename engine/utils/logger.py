"""Run logging: ``log.txt`` in the output folder plus stdout, through the ``logging`` module.

Dassl tees ``sys.stdout`` into ``log.txt``; we attach one file handler and one stdout handler
to the root logger instead, both writing the bare message, so every module's
``logging.getLogger(__name__)`` lines (and Python warnings) land in the log unchanged.
An existing log is never overwritten: like Dassl, the new one gets a
``-YYYY-mm-dd-HH-MM-SS`` suffix (``log.txt-2024-05-01-12-00-00``).
"""
import logging
import os
import sys
import time

from .io import mkdir_if_missing

_HANDLER_TAG = "_engine_setup_logger"  # marks the handlers we own, so a second call replaces them


def _log_path(output):
    if output.endswith(".txt") or output.endswith(".log"):
        fpath = output
    else:
        fpath = os.path.join(output, "log.txt")
    if os.path.exists(fpath):
        fpath += time.strftime("-%Y-%m-%d-%H-%M-%S")
        # two runs started within the same second must not share a file either
        base, n = fpath, 1
        while os.path.exists(fpath):
            n += 1
            fpath = f"{base}-{n}"
    return fpath


def close_logger():
    """Detach and close the handlers ``setup_logger`` installed; stop capturing warnings."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_TAG, False):
            root.removeHandler(handler)
            handler.close()
    logging.captureWarnings(False)


def setup_logger(output=None):
    """Log to stdout and to a file under ``output``; return the log file path (None without output).

    ``output`` ending in ``.txt``/``.log`` is the file itself, otherwise ``<output>/log.txt``.
    Calling it again (a new run in the same process) replaces the previous handlers.
    """
    close_logger()
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    formatter = logging.Formatter("%(message)s")

    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(formatter)
    setattr(console, _HANDLER_TAG, True)
    root.addHandler(console)

    fpath = None
    if output:
        fpath = _log_path(output)
        folder = os.path.dirname(fpath)
        if folder:
            mkdir_if_missing(folder)
        file_handler = logging.FileHandler(fpath, mode="a", encoding="utf-8")
        file_handler.setFormatter(formatter)
        setattr(file_handler, _HANDLER_TAG, True)
        root.addHandler(file_handler)

    logging.captureWarnings(True)  # warnings.warn(...) -> logger "py.warnings" -> log.txt
    return fpath
