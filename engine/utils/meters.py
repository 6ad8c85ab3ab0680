"""Running averages for training logs (Dassl's ``AverageMeter`` and ``MetricMeter``)."""
from collections import defaultdict

import torch


class AverageMeter:
    """The last value and the running (count-weighted) average of one quantity.

    Usage::

        losses = AverageMeter()
        losses.update(loss.item(), batch_size)
        losses.val, losses.avg
    """

    def __init__(self):
        self.reset()

    def reset(self):
        self.val = 0
        self.avg = 0
        self.sum = 0
        self.count = 0

    def update(self, val, n=1):
        if isinstance(val, torch.Tensor):
            val = val.item()
        self.val = val
        self.sum += val * n
        self.count += n
        self.avg = self.sum / self.count


class MetricMeter:
    """A named set of ``AverageMeter``; ``str()`` gives ``"loss 0.1234 (0.2345)\\tacc ..."``.

    Usage::

        meter = MetricMeter()
        meter.update({"loss": loss, "acc": acc})
        logger.info(str(meter))
    """

    def __init__(self, delimiter="\t"):
        self.meters = defaultdict(AverageMeter)
        self.delimiter = delimiter

    def update(self, input_dict):
        if input_dict is None:
            return
        if not isinstance(input_dict, dict):
            raise TypeError(f"MetricMeter.update() takes a dict of name -> value, got {type(input_dict).__name__}")
        for name, value in input_dict.items():
            if isinstance(value, torch.Tensor):
                value = value.item()
            self.meters[name].update(value)

    def __str__(self):
        return self.delimiter.join(f"{name} {m.val:.4f} ({m.avg:.4f})" for name, m in self.meters.items())
