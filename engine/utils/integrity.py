"""Checksums of the files we write, verified when they are read back.

Every torch file we write (checkpoints, enhanced bases, feature-cache bundles) is a zip archive
(torch's format) to which one more record is added: ``<archive>/.data/content.sha256``, the
sha256 of every other record (name and bytes, in archive order). torch ignores a record it does
not know, so the file still loads with plain ``torch.load`` (Dassl, the original TaskRes).
Reading checks the zip's own CRC-32 of every record and, when the seal is there, the sha256; a
file without a seal (a Dassl checkpoint, a downloaded enhanced base) gets the CRC check only.
``torch.load`` checks neither: one flipped byte inside a tensor loads without a word.

Our json artefacts (few-shot draws) carry a ``"sha256"`` field over their canonical text
(``json_digest``).
"""
import hashlib
import io
import json
import zipfile

SEAL_NAME = ".data/content.sha256"
CHUNK = 1 << 20


class IntegrityError(Exception):
    """A file's bytes differ from what was written: ``str(e)`` says which record or checksum."""


def _records_digest(archive, names):
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode() + b"\0")
        with archive.open(name) as f:  # zipfile checks each record's CRC-32 as it reads it
            for chunk in iter(lambda: f.read(CHUNK), b""):
                h.update(chunk)
    return h.hexdigest()


def seal_torch_bytes(data):
    """``data`` (bytes of a torch zip file) with the seal record added; other bytes pass unchanged."""
    buf = io.BytesIO(data)
    if not zipfile.is_zipfile(buf):
        return data  # torch's legacy (non-zip) format: nothing to add a record to
    buf.seek(0)
    with zipfile.ZipFile(buf, "a") as archive:
        names = archive.namelist()
        prefix = names[0].split("/", 1)[0]
        # a fixed timestamp: the same content gives the same bytes (caches built apart compare equal)
        seal = zipfile.ZipInfo(f"{prefix}/{SEAL_NAME}", date_time=(1980, 1, 1, 0, 0, 0))
        archive.writestr(seal, _records_digest(archive, names))
    return buf.getvalue()


def check_torch_bytes(data):
    """Verify a torch file's bytes; returns "sealed", "crc only" (no seal) or "not a zip" (legacy
    format: nothing to check). Raises IntegrityError saying what differs."""
    buf = io.BytesIO(data)
    if not zipfile.is_zipfile(buf):
        return "not a zip"
    try:
        buf.seek(0)
        with zipfile.ZipFile(buf) as archive:
            names = archive.namelist()
            seals = [n for n in names if n.split("/", 1)[-1] == SEAL_NAME]
            others = [n for n in names if n not in seals]
            digest = _records_digest(archive, others)
            if not seals:
                return "crc only"
            stored = archive.read(seals[0]).decode("ascii", "replace").strip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, ValueError, OSError,
            RuntimeError) as e:  # a bad CRC, a damaged header, an impossible compression method, ...
        raise IntegrityError(str(e) or type(e).__name__) from e
    if stored != digest:
        raise IntegrityError(f"its content sha256 is {digest[:12]}..., not the {stored[:12]}... stored with it")
    return "sealed"


def json_digest(payload):
    """sha256 of a json payload's canonical text, its own ``"sha256"`` field left out."""
    rest = {k: v for k, v in payload.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def file_sha256(path):
    """sha256 of a file's bytes (read in chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def load_torch_verified(path, **load_kwargs):
    """``torch.load(path, **load_kwargs)`` after ``check_torch_bytes``; returns (object, check result).

    The file is read once; IntegrityError when its bytes differ from what was written.
    """
    import torch

    with open(path, "rb") as f:
        data = f.read()
    status = check_torch_bytes(data)
    return torch.load(io.BytesIO(data), **load_kwargs), status
