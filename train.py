"""The one entry point: parse args -> build cfg -> build trainer -> train or evaluate.

Same CLI as the Dassl-based repositories' train.py (plus ``--trainer-dir``); flags may also follow the ``KEY VALUE``
opts. Config merge order: defaults (engine + every trainer module's ``extend_cfg``) ->
--dataset-config-file -> --config-file -> CLI flags given -> ``KEY VALUE`` opts. No trainer is
named here: trainers come from ``trainers/`` and the trainer folders.
Bad input ends in one sentence on stderr and exit code 2; nothing already written is touched.
Ctrl-C and SIGTERM (Slurm's pre-emption notice) leave a resumable checkpoint, say in one line how to
resume, and end the process by that same signal (so a calling shell or scheduler sees it).
"""
import errno
import logging
import os
import signal
import sys

from engine.errors import UserError
from engine.utils.signals import StopRequested, install_stop_handler, restore_default_handler
from engine.launch import (  # noqa: F401 - train.py's functions, as tests and scripts import them
    build_parser, check_eval_only, log_args, main, one_sentence, parse_args, reset_cfg, reset_multitask_cfg,
    save_config, set_enhanced_base, set_flags, setup, setup_cfg)


# what a full disk, a quota or a read-only folder raise
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def fail(message):
    """The one sentence on stderr (and in log.txt when it can still be written), then exit 2."""
    print(f"error: {message}", file=sys.stderr)
    record = logging.LogRecord("train", logging.ERROR, __file__, 0, "%s", (message,), None)  # "ERROR: ..."
    for handler in logging.getLogger().handlers:  # keep the sentence in log.txt too
        if isinstance(handler, logging.FileHandler):
            try:
                handler.emit(record)
            except (UserError, OSError):  # the disk that failed the run fails this line too
                pass
    sys.exit(2)


def die_by(signum, line):
    """Print ``line``, flush everything, then end by ``signum`` with its default action (no exit code 130:
    a shell loop or a job runner tells a signal death from a failure)."""
    print(line, file=sys.stderr)
    logging.shutdown()  # a signal death runs no atexit handlers: log.txt is closed here
    sys.stdout.flush()
    sys.stderr.flush()
    restore_default_handler(signum)
    os.kill(os.getpid(), signum)
    sys.exit(128 + signum)  # not reached on POSIX; a platform that ignored the signal still stops


def cli():
    install_stop_handler()  # SIGTERM: stop at the next step boundary, leaving a resumable checkpoint
    try:
        main()
    except UserError as e:
        fail(one_sentence(e))
    except OSError as e:
        if e.errno not in DISK_ERRORS:
            raise
        # a file our code does not wrap (a library's): still one sentence naming it
        where = f"{e.filename}" if e.filename else "a file of this run"
        if e.errno in (errno.EACCES, errno.EPERM):  # reading or writing
            fail(f"Cannot access {where} ({e.strerror}); fix its permissions, then run the same command again "
                 "(a training run resumes from its last checkpoint).")
        fail(f"Cannot write {where} ({e.strerror}); free space there or make it writable, then run the same "
             "command again to resume from the last checkpoint.")
    except KeyboardInterrupt as e:
        note = getattr(e, "resume_note", "run the same command again to resume from the last checkpoint")
        die_by(signal.SIGINT, f"Interrupted (Ctrl-C): {note}.")
    except StopRequested as e:
        note = getattr(e, "resume_note", "run the same command again to resume from the last checkpoint")
        die_by(e.signum, f"Stopped by {signal.Signals(e.signum).name}: {note}.")


if __name__ == "__main__":
    cli()
