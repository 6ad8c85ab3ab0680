"""Zero-shot CLIP in the idiom of CoOp's ``trainers/zsclip.py``: a sibling module imported
relatively, fp16 weights from ``clip.build_model`` as they come, no model registered (so
``--eval-only`` needs no ``--model-dir``). Only the ``dassl`` import renamed; see prompt_tuning.py.
"""
import torch

from engine import TRAINER_REGISTRY, TrainerX

from clip import clip

from .prompt_tuning import load_clip_to_cpu


@TRAINER_REGISTRY.register()
class ZeroshotCLIP(TrainerX):
    def build_model(self):
        cfg = self.cfg
        classnames = self.dm.dataset.classnames
        print(f"Loading CLIP (backbone: {cfg.MODEL.BACKBONE.NAME})")
        clip_model = load_clip_to_cpu(cfg)
        clip_model.to(self.device)
        prompts = ["a photo of a {}.".format(c.replace("_", " ")) for c in classnames]
        print(f"Prompts: {prompts}")
        prompts = torch.cat([clip.tokenize(p) for p in prompts]).to(self.device)
        with torch.no_grad():
            text_features = clip_model.encode_text(prompts)
            text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        self.text_features = text_features
        self.clip_model = clip_model

    def model_inference(self, image):
        image_features = self.clip_model.encode_image(image)
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        return self.clip_model.logit_scale.exp() * image_features @ self.text_features.t()
