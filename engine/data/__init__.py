"""Data side of the engine: datasets, few-shot sampling, transforms and the DataManager."""
from .datasets import DATASET_REGISTRY, Datum, DatasetBase, build_dataset  # noqa: F401


def __getattr__(name):  # DataManager pulls in torchvision transforms: import it on first use
    if name == "DataManager":
        from .data_manager import DataManager

        return DataManager
    raise AttributeError(name)
