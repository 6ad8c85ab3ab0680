"""ZeroshotCLIP's logits against a hand computation with CLIP's own encode_image / encode_text."""
import torch

import clip
from helpers import make_image_folder, run_train, tiny_clip, write_tiny_config


def test_zero_shot_logits_equal_the_hand_computation(tmp_path):
    data = make_image_folder(tmp_path / "data", classes=("red_fox", "dog", "bird"))
    cfg = write_tiny_config(tmp_path / "cfg.yaml", tiny_clip(tmp_path))
    trainer = run_train("--root", data, "--trainer", "ZeroshotCLIP", "--config-file", cfg, "--output-dir",
                        tmp_path / "zs", "--eval-only", "FEATURE_CACHE.ENABLED", False, "TRAINER.ZeroshotCLIP.PREC", "fp32")
    model = trainer.clip_model
    batch = next(iter(trainer.test_loader))
    images = batch["img"]
    with torch.no_grad():
        # by hand: CoOp's zero-shot = one template, "_" read as a space, cosine similarity x logit scale
        prompts = [f"a photo of a {name}." for name in ("red fox", "dog", "bird")]
        text = model.encode_text(clip.tokenize(prompts))
        text = text / text.norm(dim=-1, keepdim=True)
        image = model.encode_image(images)
        image = image / image.norm(dim=-1, keepdim=True)
        expected = model.logit_scale.exp() * image @ text.t()
        got = trainer.model_inference(images)
    assert trainer.lab2cname == {0: "bird", 1: "dog", 2: "red_fox"}  # labels follow the sorted folders
    order = [2, 1, 0]  # prompts above are red fox, dog, bird
    assert torch.allclose(got, expected[:, order], atol=1e-5)
    assert got.shape == (images.shape[0], 3)
