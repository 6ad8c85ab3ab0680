"""Crash-safe file writes: write to a temporary file beside the target, fsync, rename.

Torch files are sealed with a checksum record on the way (engine/utils/integrity.py).
"""
import io
import os
import tempfile

import torch


def _atomic(path, write):
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    except OSError as e:  # a read-only or full folder
        raise OSError(e.errno, e.strerror, path) from e
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; colleagues on a shared machine must read results
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) and e.errno is not None:  # name the file meant, not the temporary one
            raise OSError(e.errno, e.strerror, path) from e
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path, text):
    _atomic(path, lambda f: f.write(text.encode("utf-8")))


def atomic_torch_save(obj, path):
    """``torch.save(obj)`` to ``path``, atomically, with its checksum record (integrity.seal_torch_bytes)."""
    from .integrity import seal_torch_bytes

    buf = io.BytesIO()
    torch.save(obj, buf)
    data = seal_torch_bytes(buf.getvalue())
    _atomic(path, lambda f: f.write(data))


def mkdir_if_missing(dirname):
    os.makedirs(dirname, exist_ok=True)
