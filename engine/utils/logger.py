"""Run logging: ``log.txt`` in the output folder plus stdout, through the ``logging`` module.

Our code logs with ``logging.getLogger(__name__)``: one file handler writes ``log.txt``, one
console handler writes the terminal, both the bare message (warnings and errors get their level
in front: ``WARNING: ...``), so Dassl's lines (``* accuracy: X%``, ``Finish training``) read as
they do in Dassl. Trainer code written for Dassl ``print``s: as Dassl does, ``sys.stdout`` is teed
into the same ``log.txt``, so those lines reach both the terminal and the log, in order.

One ``log.txt`` per output folder. A second run in the same folder (a resume, or a fresh run
over an old log) appends to it after a separator line, instead of Dassl's ``log.txt-<date>``:
CoOp's ``parse_test_res.py`` reads only ``log.txt`` and takes the last result in it, so the
latest run's numbers are always the ones parsed and no seed is silently dropped.

A line that cannot reach ``log.txt`` (a full disk) stops the run with one sentence (`LogWriteError`)
instead of logging's traceback on stderr and a log that silently lacks the run's result.
"""
import logging
import os
import sys
import time

from ..errors import UserError
from .io import mkdir_if_missing

_HANDLER_TAG = "_engine_setup_logger"  # marks the handlers we own, so a second call replaces them


class LevelFormatter(logging.Formatter):
    """The bare message for INFO and below; ``LEVEL: message`` for warnings and errors."""

    def format(self, record):
        text = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname}: {text}"
        return text


class LogWriteError(UserError):
    """log.txt cannot be written (full disk, read-only folder)."""


def log_write_error(path, e):
    return LogWriteError(f"Cannot write to the log {path} ({getattr(e, 'strerror', None) or e}); free space there or "
                         "make it writable, then run the same command again to resume from the last checkpoint.")


class StrictFileHandler(logging.FileHandler):
    """A FileHandler whose write errors are raised (as LogWriteError), not printed and forgotten."""

    def handleError(self, record):
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            raise log_write_error(self.baseFilename, error) from error
        super().handleError(record)


class StdoutTee:
    """``sys.stdout`` that also writes to the log file (Dassl's ``Logger``), sharing the file
    handler's stream and lock so printed lines and logged lines keep their order."""

    def __init__(self, console, file_handler):
        self.console = console
        self.file_handler = file_handler

    def write(self, msg):
        self.console.write(msg)
        handler = self.file_handler
        if handler.stream is not None:
            handler.acquire()
            try:
                handler.stream.write(msg)
                handler.stream.flush()
            except OSError as e:
                raise log_write_error(handler.baseFilename, e) from e
            finally:
                handler.release()
        return len(msg)

    def flush(self):
        self.console.flush()

    def isatty(self):
        return self.console.isatty()

    def fileno(self):
        return self.console.fileno()

    def __getattr__(self, name):  # encoding, errors, ... of the real stdout
        return getattr(self.console, name)


def _log_path(output):
    if output.endswith(".txt") or output.endswith(".log"):
        return output
    return os.path.join(output, "log.txt")


def close_logger():
    """Detach and close the handlers ``setup_logger`` installed; restore stdout; stop capturing warnings."""
    if isinstance(sys.stdout, StdoutTee):
        sys.stdout = sys.stdout.console
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_TAG, False):
            root.removeHandler(handler)
            handler.close()
    logging.captureWarnings(False)


def setup_logger(output=None):
    """Log to stdout and to a file under ``output``; return the log file path (None without output).

    ``output`` ending in ``.txt``/``.log`` is the file itself, otherwise ``<output>/log.txt``.
    An existing file is appended to, after a separator line naming the time. Calling it again (a
    new run in the same process) replaces the previous handlers.
    """
    close_logger()
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    formatter = LevelFormatter("%(message)s")

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
        earlier = os.path.exists(fpath) and os.path.getsize(fpath) > 0
        try:
            file_handler = StrictFileHandler(fpath, mode="a", encoding="utf-8")
            if earlier:  # a resumed run, or a new run over an old log: keep both, newest last
                rule = "=" * 20
                file_handler.stream.write(f"\n{rule} new run in this folder, {time.strftime('%Y-%m-%d %H:%M:%S')} {rule}\n")
                file_handler.stream.flush()
        except OSError as e:
            raise log_write_error(fpath, e) from e
        file_handler.setFormatter(formatter)
        setattr(file_handler, _HANDLER_TAG, True)
        root.addHandler(file_handler)
        sys.stdout = StdoutTee(sys.stdout, file_handler)

    logging.captureWarnings(True)  # warnings.warn(...) -> logger "py.warnings" -> log.txt
    return fpath
