"""Batch metrics used in training logs (Dassl's ``compute_accuracy``)."""


def compute_accuracy(output, target, topk=(1,)):
    """Top-k accuracy of one batch, in percent.

    Args:
        output: logits ``[batch, num_classes]`` (a tuple/list: its first element is used).
        target: labels ``[batch]``.
        topk: the k values to report.

    Returns:
        list of one-element float tensors, one per k, e.g. ``[tensor([87.5])]``.
    """
    if isinstance(output, (tuple, list)):
        output = output[0]
    maxk = max(topk)
    batch_size = target.size(0)
    # [maxk, batch]: row j holds every sample's (j+1)-th best class
    pred = output.topk(maxk, dim=1, largest=True, sorted=True)[1].t()
    hits = pred.eq(target.view(1, -1).expand_as(pred))
    return [hits[:k].reshape(-1).float().sum(0, keepdim=True).mul_(100.0 / batch_size) for k in topk]
