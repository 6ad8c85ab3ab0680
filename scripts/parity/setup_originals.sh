#!/bin/bash
# Prepare the original repositories of MaPLe, PromptSRC and CLIP-LoRA (and Dassl) in a scratch
# folder, patched ONLY to run on this CPU-only, offline machine, for the parity runs of
# scripts/parity/tower_methods.sh. Nothing here is part of the project; nothing is installed into
# the project's venv.
#
#   bash scripts/parity/setup_originals.sh /tmp/maple-orig MIRRORS
#
# MIRRORS holds the bare git dirs (the `fetch` tool's /work/.mirror): owner+name/repo.
# Snapshots: KaiyangZhou/Dassl.pytorch c61a1b5, muzairkhattak/multimodal-prompt-learning 69bce21,
# muzairkhattak/PromptSRC bb95c77, MaxZanella/CLIP-LoRA 358f0d7.
#
# Every patch (the only changes to the originals):
#   P1 Dassl lr_scheduler: torch >= 2.7 dropped the `verbose` argument of LRScheduler: not passed on.
#   P2 Dassl load_checkpoint: torch.load(..., weights_only=False) (torch >= 2.6 refuses its own dicts).
#   P3 stub `wilds` and `pandas` packages (Dassl imports them for datasets we do not use).
#   P4 sitecustomize.py: Tensor.cuda()/Module.cuda() return the object itself when CUDA is absent
#      (these repos call .cuda() unconditionally).
#   P5 clip._download(url) returns $TINY_CLIP (no download; the tiny OpenAI-format file instead).
#   P6 CLIP-LoRA only: its random train augmentation is replaced by its test `preprocess` (the
#      deterministic mode of the comparison; Dassl-based repos get it from `--transforms normalize`).
#   P10 the same for PromptSRC, promptsrc_fp32/: the prompts' .half() casts follow the model's dtype, its
#      frozen zero-shot image encoder and fixed text embeddings take the model's dtype (fp16 otherwise).
#   P8 CLIP-LoRA only: after apply_lora, the LoRA matrices are copied from $LORA_INIT when it is set
#      (scripts/parity/patch_cliplora_init.py: the shared initialisation; ours reads it with MODEL.INIT_WEIGHTS).
#   P9 CLIP-LoRA only: utils.cls_acc's float(<1-element array>) fails on numpy >= 2.x: .sum().item() instead
#      (the same number).
#   P7 a second copy of MaPLe, maple_fp32/, for a tight fp32 comparison only: its hard-coded `.half()`
#      casts (proj.half(), the prompts' .half() in clip/model.py) follow the model's dtype instead; the
#      original fails at PREC fp32 without it. The fp16 run uses the unpatched maple/ (P1-P5 only).
set -euo pipefail
DEST=${1:?scratch folder}
MIRRORS=${2:-/work/.mirror}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$DEST"
cd "$DEST"

checkout() {  # bare git dir -> plain files (no LFS images)
    local git_dir=$1 out=$2
    rm -rf "$out"
    mkdir -p "$out"
    git --git-dir="$git_dir" ls-tree -r --name-only HEAD | grep -v '\.\(jpg\|png\|pyc\)$' | while read -r f; do
        mkdir -p "$out/$(dirname "$f")"
        git --git-dir="$git_dir" show "HEAD:$f" > "$out/$f"
    done
}
checkout "$MIRRORS/KaiyangZhou+Dassl.pytorch/repo" Dassl
checkout "$MIRRORS/muzairkhattak+multimodal-prompt-learning/repo" maple
checkout "$MIRRORS/muzairkhattak+PromptSRC/repo" promptsrc
checkout "$MIRRORS/MaxZanella+CLIP-LoRA/repo" cliplora

# P1
sed -i 's/super().__init__(optimizer, last_epoch, verbose)/super().__init__(optimizer, last_epoch)/' \
    Dassl/dassl/optim/lr_scheduler.py
# P2
sed -i 's/checkpoint = torch.load(fpath, map_location=map_location)/checkpoint = torch.load(fpath, map_location=map_location, weights_only=False)/' \
    Dassl/dassl/utils/torchtools.py
# P3
mkdir -p stubs/wilds
echo 'def get_dataset(*a, **k): raise RuntimeError("wilds stub")' > stubs/wilds/__init__.py
mkdir -p stubs/pandas  # imported by Dassl's wilds datasets only; sklearn (narwhals) checks isinstance on its classes
printf "class DataFrame: pass\nclass Series: pass\nclass Index: pass\n__version__ = \"0.0.0\"\n" > stubs/pandas/__init__.py
# P4
cat > stubs/sitecustomize.py <<'EOF'
import torch
if not torch.cuda.is_available():
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
EOF
# P5
for repo in maple promptsrc cliplora; do
    python3 - "$repo/clip/clip.py" <<'EOF'
import sys
path = sys.argv[1]
text = open(path).read()
marker = "def _download(url"
head, tail = text.split(marker, 1)
text = head + 'def _download(url, *args, **kwargs):\n    return os.environ["TINY_CLIP"]\n\n\ndef _download_unused(url' + tail
open(path, "w").write(text)
EOF
done
# P6
python3 - cliplora/main.py <<'EOF'
import sys
main = sys.argv[1]
text = open(main).read()
start = text.index("train_tranform = transforms.Compose([")
end = text.index("])", start) + 2
text = text[:start] + "train_tranform = preprocess" + text[end:]
open(main, "w").write(text)
EOF

# P8
python3 "$HERE/patch_cliplora_init.py" cliplora/lora.py
# P9
sed -i 's/.float().sum(0, keepdim=True).cpu().numpy())/.float().sum().item())/' cliplora/utils.py
# P7
rm -rf maple_fp32 && cp -r maple maple_fp32
sed -i 's/self.proj.half()/self.proj.type(dtype)/' maple_fp32/trainers/maple.py
sed -i 's/permute(1, 0, 2).half()/permute(1, 0, 2).type(x.dtype)/; s/expand(x.shape\[0\], -1, -1).half()/expand(x.shape[0], -1, -1).type(x.dtype)/' \
    maple_fp32/clip/model.py

# P10
rm -rf promptsrc_fp32 && cp -r promptsrc promptsrc_fp32
sed -i 's/permute(1, 0, 2).half()/permute(1, 0, 2).type(x.dtype)/; s/expand(x.shape\[0\], -1, -1).half()/expand(x.shape[0], -1, -1).type(x.dtype)/' \
    promptsrc_fp32/clip/model.py
sed -i 's/clip_model_temp_image = load_clip_to_cpu(cfg, True)$/clip_model_temp_image = load_clip_to_cpu(cfg, True).type(dtype)/; s/fixed_embeddings.half().cuda().t()/fixed_embeddings.type(zero_shot_features.dtype).cuda().t()/' \
    promptsrc_fp32/trainers/promptsrc.py

python3 -m venv venv
venv/bin/python -m pip install -q tabulate  # Dassl imports it; the project's venv lacks it
SITE=venv/lib/python3.11/site-packages
echo "$DEST/Dassl" > $SITE/dassl.pth
echo "$DEST/stubs" > $SITE/stubs.pth
echo /work/main/.venv/lib/python3.11/site-packages > $SITE/main.pth  # torch etc., read only
echo "ready: $DEST (python: $DEST/venv/bin/python)"
