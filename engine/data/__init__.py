"""Data side of the engine: datasets, few-shot sampling, transforms and the DataManager."""
from .datasets import DATASET_REGISTRY, Datum, DatasetBase, build_dataset  # noqa: F401
