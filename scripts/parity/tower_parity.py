"""Parity of MaPLe, PromptSRC and CLIP-LoRA against their original repositories: the shared
initialisation both sides load, and the comparison of what each side learnt.

    python scripts/parity/tower_parity.py init maple|promptsrc OUT.pth --depth D [--n-ctx N ...]
        a random initial prompt state in the original's checkpoint keys (values rounded to fp16 so an
        fp16 original and an fp32 run of ours start from the same numbers); both sides load it with
        MODEL.INIT_WEIGHTS
    python scripts/parity/tower_parity.py compare INIT.pth OURS.pth ORIG.pth
        per learnt tensor: max|ours - orig| / max|orig - init| (the gap in units of the movement)
    python scripts/parity/tower_parity.py compare-lora OURS.pth ORIG.pt
        the same for CLIP-LoRA's A and B matrices (its save_lora file against our checkpoint)

The whole run (originals beside ours, same tiny CLIP, images and seed) is scripts/parity/tower_methods.sh.
"""
import argparse
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)


def _randn(shape, generator, std=0.02):
    return (torch.randn(shape, generator=generator) * std).half().float()


def init_ctx(clip_path, words, n_ctx):
    """The context CTX_INIT gives (its first n_ctx token embeddings), rounded to fp16 as an fp16 run has it."""
    import clip

    weights = torch.load(clip_path, map_location="cpu", weights_only=True)
    tokens = clip.tokenize(words)[0, 1:1 + n_ctx]
    return weights["token_embedding.weight"][tokens].half().float()


def maple_init(depth, n_ctx=2, text_width=512, vision_width=768, seed=7, clip_path=None, ctx_init="a photo of a"):
    """MaPLe's learnables (prompt_learner.*); ctx from CTX_INIT when the CLIP file is given."""
    g = torch.Generator().manual_seed(seed)
    state = {"prompt_learner.ctx": init_ctx(clip_path, ctx_init, n_ctx)} if clip_path else {}
    state.update({"prompt_learner.proj.weight": _randn((vision_width, text_width), g),
             "prompt_learner.proj.bias": _randn((vision_width,), g)})
    for i in range(depth - 1):
        state[f"prompt_learner.compound_prompts_text.{i}"] = _randn((n_ctx, text_width), g)
        state[f"prompt_learner.compound_prompt_projections.{i}.weight"] = _randn((vision_width, text_width), g)
        state[f"prompt_learner.compound_prompt_projections.{i}.bias"] = _randn((vision_width,), g)
    return state


def promptsrc_init(depth_vision, depth_text, n_ctx_vision=4, n_ctx_text=4, text_width=512, vision_width=768,
                   seed=7, clip_path=None, ctx_init="a photo of a"):
    """PromptSRC's learnables (visual and deep text prompts); ctx from CTX_INIT when the CLIP file is given."""
    g = torch.Generator().manual_seed(seed)
    state = {"prompt_learner.ctx": init_ctx(clip_path, ctx_init, n_ctx_text)} if clip_path else {}
    state["image_encoder.VPT"] = _randn((n_ctx_vision, vision_width), g)
    for i in range(1, depth_vision):
        state[f"image_encoder.transformer.resblocks.{i}.VPT_shallow"] = _randn((n_ctx_vision, vision_width), g)
    for i in range(1, depth_text):
        state[f"text_encoder.transformer.resblocks.{i}.VPT_shallow"] = _randn((n_ctx_text, text_width), g)
    return state


def cliplora_init(clip_path, out, seed=7):
    """CLIP-LoRA's matrices for the CLIP file (default settings) in its save_lora format: A as its init,
    B small random (B = 0 would leave A without a gradient at the first steps of a short run)."""
    import clip
    from engine.config import get_cfg_default
    from trainers import extend_cfg
    from trainers.clip_lora import apply_lora, export_original

    model = clip.load(clip_path, device="cpu")[0].float()
    c = extend_cfg(get_cfg_default()).TRAINER.CLIP_LORA
    torch.manual_seed(seed)
    layers = apply_lora(model, c)
    with torch.no_grad():
        for layer in layers.values():
            for m in layer.values():
                m.w_lora_A.copy_(m.w_lora_A.half().float())
                m.w_lora_B.copy_((0.01 * torch.randn_like(m.w_lora_B)).half().float())
    export_original(layers, c, out)


def _state(path):
    obj = torch.load(path, map_location="cpu", weights_only=False)
    return obj.get("state_dict", obj)


def compare(init_path, ours_path, orig_path):
    init, ours, orig = _state(init_path), _state(ours_path), _state(orig_path)
    learnt = sorted(k for k in ours if "token_prefix" not in k and "token_suffix" not in k and not k.startswith("gpa."))
    worst = 0.0
    print(f"{'tensor':60s} {'max|orig-init|':>14s} {'max|ours-orig|':>14s} {'ratio':>9s}")
    for key in learnt:
        if key not in orig:
            print(f"{key:60s} missing in the original's checkpoint")
            worst = float("inf")
            continue
        a, b = ours[key].float(), orig[key].float()
        start = init[key].float() if key in init else None
        moved = (b - start).abs().max().item() if start is not None else float("nan")
        gap = (a - b).abs().max().item()
        ratio = gap / moved if moved and moved == moved else float("nan")
        worst = max(worst, ratio) if ratio == ratio else worst
        print(f"{key:60s} {moved:14.3e} {gap:14.3e} {ratio:9.2e}")
    print(f"worst ratio: {worst:.2e}")
    return worst


def lora_tensors_orig(path):
    """CLIP-LoRA's save_lora file -> {(layer index, proj name, 'A'|'B'): tensor} in its layer order."""
    data = torch.load(path, map_location="cpu", weights_only=False)
    out = {}
    for layer, weights in data["weights"].items():
        i = int(layer.split("_")[1])
        for proj, ab in weights.items():
            out[(i, proj, "A")] = ab["w_lora_A"]
            out[(i, proj, "B")] = ab["w_lora_B"]
    return out


def compare_lora(ours_path, orig_path, init_path=None):
    from trainers.clip_lora import lora_file_tensors

    ours = lora_file_tensors(_state(ours_path))
    orig = lora_tensors_orig(orig_path)
    init = lora_tensors_orig(init_path) if init_path else {}
    worst = worst_norm = 0.0
    for key in sorted(orig):
        a, b = ours[key].float(), orig[key].float()
        gap = (a - b).abs().max().item()
        moved = (b - init[key].float()).abs().max().item() if key in init else float("nan")
        ratio = gap / moved if moved and moved == moved else float("nan")
        # the same in L2 norms: Adam's step m / (sqrt(v) + eps) turns float noise in a near-zero gradient
        # element into a step of a few ulps of lr, so the max over elements is the pessimistic figure
        norm = ((a - b).norm() / (b - init[key].float()).norm()).item() if key in init else float("nan")
        worst = max(worst, ratio) if ratio == ratio else worst
        worst_norm = max(worst_norm, norm) if norm == norm else worst_norm
        print(f"layer {key[0]:2d} {key[1]:7s} {key[2]}  max|orig-init| {moved:.3e}  max|ours-orig| {gap:.3e}  "
              f"ratio {ratio:.2e}  L2 ratio {norm:.2e}")
    print(f"worst ratio: {worst:.2e} (max over elements), {worst_norm:.2e} (L2)")
    return worst


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("init")
    i.add_argument("method", choices=["maple", "promptsrc", "cliplora"])
    i.add_argument("out")
    i.add_argument("--depth", type=int, default=3)
    i.add_argument("--depth-text", type=int, default=None)
    i.add_argument("--clip", default=None, help="the CLIP file: adds the context CTX_INIT gives")
    c = sub.add_parser("compare")
    c.add_argument("init")
    c.add_argument("ours")
    c.add_argument("orig")
    cl = sub.add_parser("compare-lora")
    cl.add_argument("ours")
    cl.add_argument("orig")
    cl.add_argument("--init", default=None)
    args = p.parse_args()
    if args.cmd == "init" and args.method == "cliplora":
        cliplora_init(args.clip, args.out)
        print(f"wrote {args.out}")
    elif args.cmd == "init":
        if args.method == "maple":
            state = maple_init(args.depth, clip_path=args.clip)
        else:
            state = promptsrc_init(args.depth, args.depth_text or args.depth, clip_path=args.clip)
        torch.save({"state_dict": state, "epoch": 0}, args.out)
        print(f"wrote {args.out}: {', '.join(state)}")
    elif args.cmd == "compare":
        compare(args.init, args.ours, args.orig)
    else:
        compare_lora(args.ours, args.orig, args.init)


if __name__ == "__main__":
    main()
