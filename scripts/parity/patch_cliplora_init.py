"""Parity patch P8 of scripts/parity/setup_originals.sh (CLIP-LoRA's lora.py, in the scratch copy only):
after ``apply_lora``, copy the LoRA matrices from $LORA_INIT when it is set (a save_lora-format file), so
that the original and ours start from the same matrices (ours reads the file with MODEL.INIT_WEIGHTS)."""
import sys

path = sys.argv[1]
text = open(path).read()
anchor = "    list_lora_layers = apply_lora(args, clip_model)\n"
patch = """    import os
    if os.environ.get('LORA_INIT'):  # parity patch P8: a shared initialisation
        _init = torch.load(os.environ['LORA_INIT'], weights_only=False)['weights']
        for _i, _layer in enumerate(list_lora_layers):
            for _proj, _ab in _init[f'layer_{_i}'].items():
                getattr(_layer, _proj).w_lora_A.data.copy_(_ab['w_lora_A'])
                getattr(_layer, _proj).w_lora_B.data.copy_(_ab['w_lora_B'])
"""
if anchor not in text:
    sys.exit(f"{path}: apply_lora call not found; another CLIP-LoRA version?")
open(path, "w").write(text.replace(anchor, anchor + patch, 1))
