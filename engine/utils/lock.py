"""One run per output folder: an advisory lock the OS releases when the process dies."""
import fcntl
import os

from ..errors import UserError

LOCK_NAME = ".run.lock"


class OutputDirLock:
    """Hold ``<output_dir>/.run.lock`` for the life of a run; a second run is refused."""

    def __init__(self, output_dir):
        self.output_dir = output_dir
        self.path = os.path.join(output_dir, LOCK_NAME)
        self._file = None

    def acquire(self):
        try:
            os.makedirs(self.output_dir, exist_ok=True)
            f = open(self.path, "a+")
        except OSError as e:  # read-only or foreign folder, full disk: say so before anything runs
            raise UserError(
                f"Cannot write to the output folder {self.output_dir} ({e.strerror or e}); make it writable "
                "or pass a different --output-dir.") from e
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise UserError(
                f"Another run ({holder}) is using the output folder {self.output_dir}; wait for it to finish "
                "or pass a different --output-dir.") from None
        try:
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()}")
            f.flush()
        except OSError as e:  # a full disk: nothing else will fit either
            fcntl.flock(f, fcntl.LOCK_UN)
            try:
                f.close()  # flushes again, and fails again
            except OSError:
                pass
            raise UserError(
                f"Cannot write to the output folder {self.output_dir} ({e.strerror or e}); free space there "
                "or pass a different --output-dir.") from e
        self._file = f
        return self

    def release(self):
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
