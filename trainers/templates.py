"""Prompt templates of the original TaskRes/CoOp, per dataset class name.

Returned as fresh tuples/lists on every call: the original appended ImageNet's 8th template to
a module-level list in place, so building a second base added it again.
"""

CUSTOM_TEMPLATES = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DescribableTextures": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": "a photo of a {}.",
    "Food101": "a photo of {}, a type of food.",
    "SUN397": "a photo of a {}.",
    "Caltech101": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
    "ImageNetSketch": "a photo of a {}.",
    "ImageNetV2": "a photo of a {}.",
    "ImageNetA": "a photo of a {}.",
    "ImageNetR": "a photo of a {}.",
}
DEFAULT_TEMPLATE = "a photo of a {}."

# The 7 "selected" ImageNet templates (CLIP's prompt-engineering notebook).
IMAGENET_TEMPLATES_SELECT = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)



def base_templates(dataset_name):
    """Templates averaged into the TaskRes base: ImageNet 7 selected + "a photo of a {}.", else one.

    The ImageNet variants use their single template; for domain generalisation the base comes
    from the ImageNet checkpoint anyway (it is a buffer of the learner).
    """
    if dataset_name == "ImageNet":
        return list(IMAGENET_TEMPLATES_SELECT) + [CUSTOM_TEMPLATES["ImageNet"]]
    return [CUSTOM_TEMPLATES.get(dataset_name, DEFAULT_TEMPLATE)]
