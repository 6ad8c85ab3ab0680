"""Stopping a run on request: SIGTERM (what Slurm sends before pre-empting a job) is noted, and the
training loop stops at the next step boundary, leaving a resumable checkpoint.

    install_stop_handler()     # train.py's cli: SIGTERM -> a stop request (logged at once)
    check_stop()               # the loop, after each step: raises StopRequested once one came
    restore_default_handler()  # before re-sending the signal to die by it

Ctrl-C stays Python's KeyboardInterrupt (it interrupts even a long step); the trainer handles both
the same way (engine/trainer.py ``leave_resumable_checkpoint``).
"""
import logging
import signal

logger = logging.getLogger(__name__)

_requested = None  # the signal number of a pending stop request


class StopRequested(Exception):
    """A stop was asked for by ``signum``; raised at a step boundary, so no step is half done."""

    def __init__(self, signum):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


def _on_signal(signum, frame):
    global _requested
    if _requested is None:
        logger.warning("Received %s: the current step finishes, then a resumable checkpoint is saved and the run "
                       "stops", signal.Signals(signum).name)
    _requested = signum


def install_stop_handler(signums=(signal.SIGTERM,)):
    """Turn ``signums`` into stop requests (call from the main thread)."""
    global _requested
    _requested = None
    for signum in signums:
        signal.signal(signum, _on_signal)


def restore_default_handler(signum):
    signal.signal(signum, signal.SIG_DFL)


def stop_requested():
    return _requested is not None


def check_stop():
    """Raise StopRequested when a stop request is pending (it stays pending: later checks raise too)."""
    if _requested is not None:
        raise StopRequested(_requested)
