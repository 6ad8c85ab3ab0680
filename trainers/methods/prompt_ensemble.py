"""Prompt ensembling: one zero-shot classifier from the text features of several templates.

CoOp's ZeroshotCLIP2 and Tip-Adapter's ``clip_classifier`` both L2-normalise each template's
class embedding, average over templates, and normalise the mean again.
"""


def ensemble_classifier(per_template):
    """[T, K, D] raw text features (template, class) -> [K, D] unit-norm class weights."""
    if per_template.dim() != 3:
        raise ValueError(f"expected text features [templates, classes, dim], got shape {list(per_template.shape)}")
    feats = per_template / per_template.norm(dim=-1, keepdim=True)
    mean = feats.mean(dim=0)
    return mean / mean.norm(dim=-1, keepdim=True)


def zero_shot_logits(image_features, classifier, logit_scale):
    """logit_scale * normalize(image) @ classifier^T; ``classifier`` rows already unit-norm."""
    image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    return logit_scale * image_features.to(classifier.dtype) @ classifier.t()


def ensemble_templates(select_templates, dataset_template, dataset_name):
    """CoOp's ZeroshotCLIP2 list: the selected ImageNet templates, plus the dataset's own
    template for every dataset but ImageNet (a fresh list: the original extended a class-level
    list in place, so a second build in one process added the template again)."""
    templates = list(select_templates)
    if dataset_name != "ImageNet":
        templates.append(dataset_template)
    return templates

