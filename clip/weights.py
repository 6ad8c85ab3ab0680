"""Where CLIP weights come from: OpenAI's name table, the cache folder, download, file reading.

Nothing here builds a model. A name resolves to a file path (`resolve_openai_weights`);
a file path becomes an OpenAI-format state dict (`read_state_dict`). Downloads stream into
a temporary file beside the target and are renamed into place only after the sha256
embedded in OpenAI's URL matched, so the cache never holds a partial file.

Environment:
    TASKRES_CLIP_CACHE   cache folder when `cache_dir` is not given (default ~/.cache/clip)
    TASKRES_OFFLINE=1    never try to download; a missing file is reported at once
"""
import hashlib
import http.client
import logging
import os
import pickle
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Mapping

import torch

from engine.errors import CheckpointError

logger = logging.getLogger(__name__)

CACHE_ENV = "TASKRES_CLIP_CACHE"
OFFLINE_ENV = "TASKRES_OFFLINE"
DEFAULT_CACHE_DIR = "~/.cache/clip"
DOWNLOAD_TIMEOUT_S = 60

# OpenAI's published checkpoints; the second-to-last path part is the file's sha256.
OPENAI_URLS = {
    "RN50": "https://openaipublic.azureedge.net/clip/models/afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt",
    "RN101": "https://openaipublic.azureedge.net/clip/models/8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599/RN101.pt",
    "RN50x4": "https://openaipublic.azureedge.net/clip/models/7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd/RN50x4.pt",
    "RN50x16": "https://openaipublic.azureedge.net/clip/models/52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa/RN50x16.pt",
    "RN50x64": "https://openaipublic.azureedge.net/clip/models/be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c/RN50x64.pt",
    "ViT-B/32": "https://openaipublic.azureedge.net/clip/models/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
    "ViT-B/16": "https://openaipublic.azureedge.net/clip/models/5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
    "ViT-L/14": "https://openaipublic.azureedge.net/clip/models/b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
    "ViT-L/14@336px": "https://openaipublic.azureedge.net/clip/models/3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02/ViT-L-14-336px.pt",
}

# Tensors OpenAI's TorchScript archives (and traced open_clip models) carry beside the
# weights; they describe the architecture and are not parameters of the eager model.
NON_WEIGHT_KEYS = ("input_resolution", "context_length", "vocab_size", "attn_mask")


class ChecksumError(CheckpointError):
    """A downloaded file whose sha256 differs from the one OpenAI published."""


def available_models():
    """OpenAI's CLIP model names, in OpenAI's order."""
    return list(OPENAI_URLS)


def is_offline():
    """True when TASKRES_OFFLINE asks us never to touch the network."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def resolve_cache_dir(cache_dir=None):
    """The cache folder: the argument, else $TASKRES_CLIP_CACHE, else ~/.cache/clip."""
    folder = cache_dir or os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR
    return os.path.abspath(os.path.expanduser(str(folder)))


def expected_sha256(url):
    return url.rstrip("/").split("/")[-2]


def cached_file_path(name, cache_dir=None):
    """Where the weights of OpenAI model `name` live in the cache (e.g. <cache>/ViT-B-32.pt)."""
    return os.path.join(resolve_cache_dir(cache_dir), os.path.basename(OPENAI_URLS[name]))


def resolve_openai_weights(name, cache_dir=None):
    """Path to the weights of OpenAI model `name`: the cached file, downloaded if needed.

    Raises CheckpointError with the exact expected path and the URL when the file is not
    cached and cannot be downloaded (offline, no route, HTTP error).
    """
    return fetch(OPENAI_URLS[name], cached_file_path(name, cache_dir), name)


def fetch(url, target, label):
    """`target` if it is a file, else `url` downloaded there (sha256 checked); `label` names it in errors."""
    if os.path.isfile(target):
        # No checksum here: users may drop their own (converted, fine-tuned) file in place.
        return target
    if os.path.exists(target):
        raise CheckpointError(
            f"{target} exists but is not a regular file; remove it so the CLIP weights for "
            f"{label} can be stored there."
        )
    if is_offline():
        reason = f"{OFFLINE_ENV}={os.environ.get(OFFLINE_ENV)} forbids downloads"
    else:
        try:
            download(url, target)
            return target
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            reason = short_reason(e)
            logger.debug("Download of %s failed", url, exc_info=True)
    raise CheckpointError(
        f"CLIP weights for {label} not found at {target} and could not be downloaded "
        f"({reason}); download {url} to that path, or pass MODEL.BACKBONE.WEIGHTS /path/to/file."
    )


def _open_url(url, timeout):
    """The one place that opens a URL (tests replace it to serve local bytes)."""
    return urllib.request.urlopen(url, timeout=timeout)


def download(url, target, timeout=DOWNLOAD_TIMEOUT_S):
    """Fetch `url` to `target`, checking the sha256 embedded in the URL.

    The bytes go to a temporary file in the target's folder; it is renamed onto `target`
    only when the checksum matches, and removed on any failure.
    """
    want = expected_sha256(url)
    folder = os.path.dirname(target)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(target) + ".", suffix=".part")
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, _open_url(url, timeout) as source:
            total = _content_length(source)
            logger.info("Downloading %s to %s%s", url, target, f" ({total / 2**20:.0f} MiB)" if total else "")
            done, next_report = 0, 0.1
            while True:
                chunk = source.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if total and done / total >= next_report:
                    logger.info("  %3.0f%% of %s", 100 * done / total, os.path.basename(target))
                    next_report += 0.1
            out.flush()
            os.fsync(out.fileno())
        got = digest.hexdigest()
        if got != want:
            raise ChecksumError(
                f"The file downloaded from {url} has sha256 {got}, not the expected {want}; "
                f"it was discarded, so run again to retry the download."
            )
        os.replace(tmp, target)  # atomic: readers see no file or the whole file
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    logger.info("Saved %s", target)
    return target


def _content_length(source):
    headers = getattr(source, "headers", None)
    value = headers.get("Content-Length") if headers is not None else None
    try:
        return int(value) if value else 0
    except ValueError:
        return 0


def read_state_dict(path):
    """Read a CLIP checkpoint file into a flat {key: tensor} dict on the CPU.

    Accepts an OpenAI TorchScript archive (its state_dict is taken), a plain state dict,
    or a dict wrapping one under "state_dict" (keys may carry a DataParallel "module."
    prefix). Tensors keep their stored dtype; the caller converts.
    """
    path = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.isfile(path):
        raise CheckpointError(f"CLIP weights file {path} does not exist; check the path.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, OpenAI's format is not
            archive = torch.jit.load(path, map_location="cpu")
        return _as_weight_dict(archive.state_dict(), path)
    except RuntimeError:
        pass  # not a TorchScript archive: try a pickled state dict below
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "unsupported global" in str(e).lower():  # a real pickle, but of arbitrary Python objects
            raise CheckpointError(
                f"CLIP weights file {path} holds Python objects besides tensors, which are not "
                f"loaded for safety; re-save it with torch.save(model.state_dict(), path)."
            ) from e
        raise _corrupt(path, "not a PyTorch file") from e
    except Exception as e:  # torch.load reports damage as RuntimeError, EOFError, KeyError, ...
        raise _corrupt(path, e) from e
    return _as_weight_dict(obj, path)


def _corrupt(path, reason):
    return CheckpointError(
        f"CLIP weights file {path} is corrupt or truncated ({short_reason(reason)}); "
        f"delete it and download it again."
    )


def _as_weight_dict(obj, path):
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(
            f"CLIP weights file {path} does not contain a state dict (found {type(obj).__name__}); "
            f"save one with torch.save(model.state_dict(), path)."
        )
    state = {}
    for key, value in obj.items():
        if not torch.is_tensor(value):
            raise CheckpointError(
                f"CLIP weights file {path} maps key {key!r} to a {type(value).__name__}, not a tensor; "
                f"save a plain state dict with torch.save(model.state_dict(), path)."
            )
        state[str(key)] = value
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def short_reason(error, limit=160):
    """The first line of an exception's message, cut to `limit` characters, for one-sentence errors."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if len(text) > limit and ". " in text:
        text = text.split(". ")[0]  # torch appends paragraphs of advice after the first sentence
    return text if len(text) <= limit else text[: limit - 3] + "..."
