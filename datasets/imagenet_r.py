"""ImageNet-R (200 of ImageNet's classes), test only: ``imagenet-rendition/imagenet-r/<wnid>/``."""
from engine.data.datasets import DATASET_REGISTRY

from .imagenet_a import ImageNetSubset


@DATASET_REGISTRY.register()
class ImageNetR(ImageNetSubset):
    dataset_dir = "imagenet-rendition"
    image_subdir = "imagenet-r"
