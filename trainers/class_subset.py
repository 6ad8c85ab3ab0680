"""Evaluating a 1000-class ImageNet fit on ImageNet-A/R (200 of its classes): select the classes'
rows (or columns) of a checkpoint's class-indexed tensors, as TaskRes does for its base."""
import logging

import torch

logger = logging.getLogger(__name__)


def select_classes(trainer, state_dict, class_dims):
    """``state_dict`` with ``class_dims[key]`` (the class axis of that tensor) cut to the dataset's classes.

    Unchanged when the dataset has no ``class_indices_in_imagenet`` or the checkpoint already has
    this dataset's number of classes.
    """
    indices = getattr(trainer.dm.dataset, "class_indices_in_imagenet", None)
    if indices is None:
        return state_dict
    sizes = {state_dict[k].shape[d] for k, d in class_dims.items() if k in state_dict}
    if sizes == {trainer.num_classes} or not sizes:
        return state_dict
    logger.info("Selecting the %d classes of %s from a %d-class checkpoint", len(indices),
                trainer.cfg.DATASET.NAME, max(sizes))
    index = torch.as_tensor(indices, dtype=torch.long)
    return {k: (v.index_select(class_dims[k], index) if k in class_dims else v) for k, v in state_dict.items()}
