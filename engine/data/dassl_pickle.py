"""Read the pickles CoOp/Dassl leave in a data folder, without running any code from them.

CoOp caches ``imagenet/preprocessed.pkl`` ({"train", "test"}: lists of Dassl ``Datum``) and
``<dataset>/split_fewshot/shot_K-seed_S.pkl`` ({"train", "val"}) with ``pickle.dump``. Reusing them
keeps a user's earlier few-shot samples. A pickle can name any importable callable, so the
unpickler here admits exactly one class, ``dassl.data.datasets.base_dataset.Datum`` (rebuilt as
our `Datum`); anything else stops the load with a `DataError` before that object is built.
Paths inside are absolute paths of the machine that wrote them: `rebase_items` moves them onto
the dataset folder of this run when they do not exist here.
"""
import logging
import os
import pickle

from ..errors import DataError
from .datum import Datum

logger = logging.getLogger(__name__)

DASSL_DATUM = ("dassl.data.datasets.base_dataset", "Datum")


class _Refused(pickle.UnpicklingError):
    """A global other than Dassl's Datum was requested."""


class _PickledDatum:
    """Stand-in for Dassl's Datum while unpickling: keeps the attribute dict ``BUILD`` hands it."""

    __slots__ = ("state",)

    def __init__(self):
        self.state = None

    def __setstate__(self, state):
        self.state = state


class _DatumUnpickler(pickle.Unpickler):
    """Admits Dassl's Datum and, for protocols 0/1, the ``copyreg._reconstructor(Datum, object, None)`` call."""

    def find_class(self, module, name):
        if (module, name) == DASSL_DATUM:
            return _PickledDatum
        # protocols 0/1 rebuild a plain object through copyreg._reconstructor(cls, object, None); 0-2 record
        # the Python 2 names (copy_reg, __builtin__), which find_class receives unmapped
        if (module, name) in (("copyreg", "_reconstructor"), ("copy_reg", "_reconstructor")):
            return self._reconstruct  # a bound method: a BUILD opcode can not set attributes on it
        if (module, name) in (("builtins", "object"), ("__builtin__", "object")):
            return object
        raise _Refused(f"{module}.{name}")

    def _reconstruct(self, cls, base, state):
        if cls is not _PickledDatum or base is not object or state is not None:
            raise _Refused("copyreg._reconstructor with other arguments than Dassl's Datum")
        return _PickledDatum()

    def persistent_load(self, pid):
        raise _Refused(f"persistent id {pid!r}")


def _to_datum(obj, path):
    state = obj.state if isinstance(obj, _PickledDatum) else None
    fields = (("_impath", str), ("_label", int), ("_domain", int), ("_classname", str))
    if not isinstance(state, dict) or not all(isinstance(state.get(k), t) for k, t in fields):
        raise DataError(f"{path} holds an item that is not a Dassl Datum (str _impath and _classname, int _label "
                        "and _domain); delete the file so it is drawn again.")
    return Datum(impath=state["_impath"], label=state["_label"], domain=state["_domain"], classname=state["_classname"])


def read_dassl_pickle(path, keys, optional=()):
    """``{key: [Datum, ...]}`` for ``keys`` (+ ``optional`` ones when present) of CoOp's pickle at ``path``.

    Raises `DataError` (one sentence naming ``path``) for a refused global, a truncated file or an
    unexpected structure; nothing in the file is executed.
    """
    try:
        with open(path, "rb") as f:
            payload = _DatumUnpickler(f).load()
    except _Refused as e:
        raise DataError(
            f"{path} asks to load {e}, which is not Dassl's Datum; refused without running it: delete the file "
            "(it is drawn again) or replace it with the one CoOp wrote."
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DataError(
            f"{path} is not a readable CoOp pickle ({type(e).__name__}: {e}); delete it so it is drawn again.") from e
    if not isinstance(payload, dict):
        raise DataError(
            f"{path} holds a {type(payload).__name__}, not CoOp's dict of Datum lists; delete it so it is drawn again.")
    out = {}
    for key in tuple(keys) + tuple(k for k in optional if k in payload):
        items = payload.get(key)
        if not isinstance(items, list):
            raise DataError(f'{path} has no "{key}" list of Datum; delete it so it is drawn again.')
        out[key] = [_to_datum(item, path) for item in items]
    return out


def _rebase_one(impath, dataset_dir):
    """``/old/root/<name>/rest`` -> ``<dataset_dir>/rest`` where ``<name>`` is the dataset folder's name."""
    name = os.path.basename(os.path.normpath(dataset_dir))
    parts = impath.replace("\\", "/").split("/")
    if name not in parts:
        return None
    cut = len(parts) - 1 - parts[::-1].index(name)  # the last occurrence: the dataset folder itself
    return os.path.join(dataset_dir, *parts[cut + 1:])


def rebase_items(items, dataset_dir, source, check="all"):
    """Return ``items`` with paths moved onto ``dataset_dir`` when the recorded ones do not exist here.

    The pickles hold absolute paths of the machine that wrote them: when the first one is missing,
    each path is cut after its last component named like ``dataset_dir`` and re-joined onto
    ``dataset_dir``. ``check``: "all" stats every rebased path, "first_per_label" one per class
    (ImageNet's 1.28M-item list). A path that cannot be placed is a `DataError` naming ``source``.
    """
    if not items or os.path.exists(items[0].impath):
        return items
    rebased = []
    for item in items:
        new = _rebase_one(item.impath, dataset_dir)
        if new is None:
            raise DataError(
                f"{source} lists {item.impath}, which does not exist and has no folder named "
                f"{os.path.basename(os.path.normpath(dataset_dir))!r} to move onto {dataset_dir}; "
                f"delete {source} so it is drawn again."
            )
        rebased.append(Datum(impath=new, label=item.label, domain=item.domain, classname=item.classname))
    seen = set()
    to_check = []
    for item in rebased:
        if check == "all" or item.label not in seen:
            seen.add(item.label)
            to_check.append(item)
    missing = [item.impath for item in to_check if not os.path.exists(item.impath)]
    if missing:
        raise DataError(
            f"{source} lists images that exist neither where it says ({items[0].impath}) nor under DATASET.ROOT "
            f"({len(missing)} missing, e.g. {missing[0]}); delete {source} so it is drawn again."
        )
    logger.info("%s was written on another machine or folder: its paths (%s...) were rebased onto %s",
                source, os.path.dirname(items[0].impath), dataset_dir)
    return rebased
