"""Data side of the engine: datasets, few-shot sampling, transforms and the DataManager."""
from .datasets import DATASET_REGISTRY, Datum, DatasetBase, build_dataset  # noqa: F401

_LAZY = ("DataManager", "DatasetWrapper", "build_data_loader", "build_sampler")


def __getattr__(name):  # the data manager pulls in torchvision transforms: import it on first use
    if name in _LAZY:
        from . import data_manager

        return getattr(data_manager, name)
    raise AttributeError(name)
