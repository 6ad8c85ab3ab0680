#!/bin/bash
# Parity of our MaPLe, PromptSRC and CLIP-LoRA with their original repositories, on the same inputs:
# the same tiny OpenAI-format CLIP (ViT-B/16 widths, 3 layers, 32 px), the same Fashion-MNIST images
# laid out as EuroSAT (one copy per side), the same seed, deterministic mode (--transforms normalize,
# one full batch per epoch) and one shared initial prompt state (MODEL.INIT_WEIGHTS, both sides).
# Needs the originals prepared by scripts/parity/setup_originals.sh; not run by the tests (minutes).
#
#   bash scripts/parity/tower_methods.sh [maple] [promptsrc] [cliplora]     (default: all three)
#
# Env: ORIG (default /tmp/maple-orig, from setup_originals.sh), WORK (default /tmp/tower-parity).
# Prints, per method: both sides' accuracy, max|ours - orig| / max|orig - init| per learnt tensor,
# and each side's accuracy on the other's checkpoint.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/../.." && pwd)
ORIG=${ORIG:-/tmp/maple-orig}
WORK=${WORK:-/tmp/tower-parity}
PY=${PY:-/work/main/.venv/bin/python}
OPY=$ORIG/venv/bin/python
METHODS=${*:-maple promptsrc cliplora}
mkdir -p "$WORK"
cd "$HERE"
[ -f "$WORK/tiny_b16.pt" ] || $PY scripts/parity/make_inputs.py "$WORK" --layers 3
export TINY_CLIP=$WORK/tiny_b16.pt

fresh_data() {  # one untouched copy of the images per run (each side writes split_fewshot/ itself)
    rm -rf "$WORK/$1"
    cp -r "$WORK/data_ours" "$WORK/$1"
    rm -rf "$WORK/$1/eurosat/split_fewshot"
}
acc() { grep -o '\* accuracy: [0-9.]*%' "$1" | tail -1; }

# The tiny run, the same on both sides: 2 shots x 10 classes = one batch of 20, 2 epochs, LR x10 of the
# published so that the context moves well above float noise.
COMMON=(DATASET.NUM_SHOTS 2 DATALOADER.TRAIN_X.BATCH_SIZE 20 DATALOADER.NUM_WORKERS 0 OPTIM.MAX_EPOCH 2
        INPUT.SIZE "(32, 32)")

FLAGS=()  # train.py flags of the next run (before the opts: argparse's REMAINDER takes all after them)
run_ours() {  # trainer config out data opts...
    local trainer=$1 config=$2 out=$3 data=$4; shift 4
    $PY train.py --root "$WORK/$data" --seed 1 --trainer "$trainer" --dataset-config-file configs/datasets/eurosat.yaml \
        --config-file "$config" --transforms normalize --output-dir "$out" --backbone "$TINY_CLIP" "${FLAGS[@]}" \
        "${COMMON[@]}" "$@" \
        > "$out.log" 2>&1
}
run_orig() {  # repo trainer config out data opts...
    local repo=$1 trainer=$2 config=$3 out=$4 data=$5; shift 5
    (cd "$ORIG/$repo" && $OPY train.py --root "$WORK/$data" --seed 1 --trainer "$trainer" \
        --dataset-config-file configs/datasets/eurosat.yaml --config-file "$config" --transforms normalize \
        --output-dir "$out" "${FLAGS[@]}" "${COMMON[@]}" "$@" > "$out.log" 2>&1)
}

maple() {
    local init=$WORK/init_maple.pth cfg=configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml
    local opts=(OPTIM.LR 0.035 TRAINER.MAPLE.PROMPT_DEPTH 3 MODEL.INIT_WEIGHTS "$init")
    $PY scripts/parity/tower_parity.py init maple "$init" --depth 3 --clip "$TINY_CLIP" > /dev/null
    rm -rf "$WORK"/maple_*
    fresh_data maple_d1; fresh_data maple_d2; fresh_data maple_d3
    run_ours MaPLe "$cfg" "$WORK/maple_ours" maple_d1 "${opts[@]}" TRAINER.MAPLE.PREC fp32
    run_orig maple_fp32 MaPLe "$cfg" "$WORK/maple_orig32" maple_d2 "${opts[@]}" TRAINER.MAPLE.PREC fp32
    run_orig maple MaPLe "$cfg" "$WORK/maple_orig16" maple_d3 "${opts[@]}"  # its default fp16, on the CPU
    echo "== MaPLe: accuracy ours $(acc "$WORK/maple_ours.log"), original fp32 $(acc "$WORK/maple_orig32.log"), original fp16 $(acc "$WORK/maple_orig16.log")"
    local ck=MultiModalPromptLearner/model.pth.tar-2
    echo "-- ours (fp32) vs the original at fp32 (P7)"
    $PY scripts/parity/tower_parity.py compare "$init" "$WORK/maple_ours/$ck" "$WORK/maple_orig32/$ck"
    echo "-- ours (fp32) vs the original unpatched (fp16 on the CPU)"
    $PY scripts/parity/tower_parity.py compare "$init" "$WORK/maple_ours/$ck" "$WORK/maple_orig16/$ck" | tail -1
    # checkpoints both ways
    FLAGS=(--eval-only --model-dir "$WORK/maple_orig32" --load-epoch 2)
    run_ours MaPLe "$cfg" "$WORK/maple_ours_evals_orig" maple_d1 "${opts[@]}" TRAINER.MAPLE.PREC fp32
    FLAGS=(--eval-only --model-dir "$WORK/maple_ours" --load-epoch 2)
    run_orig maple_fp32 MaPLe "$cfg" "$WORK/maple_orig_evals_ours" maple_d2 "${opts[@]}" TRAINER.MAPLE.PREC fp32
    FLAGS=()
    echo "== MaPLe checkpoints: ours on the original's $(acc "$WORK/maple_ours_evals_orig.log"), the original on ours $(acc "$WORK/maple_orig_evals_ours.log")"
}

promptsrc() {
    local init=$WORK/init_promptsrc.pth cfg="configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml"
    # depth 3 in both towers (the tiny CLIP has 3 layers); GPA over the 2 epochs: weights 0.378, 0.622
    local opts=(OPTIM.LR 0.025 TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION 3 TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT 3
                TRAINER.PROMPTSRC.GPA_MEAN 2 TRAINER.PROMPTSRC.GPA_STD 1 MODEL.INIT_WEIGHTS "$init")
    $PY scripts/parity/tower_parity.py init promptsrc "$init" --depth 3 --clip "$TINY_CLIP" > /dev/null
    rm -rf "$WORK"/promptsrc_*
    fresh_data promptsrc_d1; fresh_data promptsrc_d2; fresh_data promptsrc_d3
    run_ours PromptSRC "$cfg" "$WORK/promptsrc_ours" promptsrc_d1 "${opts[@]}" TRAINER.PROMPTSRC.PREC fp32
    run_orig promptsrc_fp32 PromptSRC "$cfg" "$WORK/promptsrc_orig32" promptsrc_d2 "${opts[@]}" TRAINER.PROMPTSRC.PREC fp32
    run_orig promptsrc PromptSRC "$cfg" "$WORK/promptsrc_orig16" promptsrc_d3 "${opts[@]}"  # its default fp16
    echo "== PromptSRC: accuracy ours $(acc "$WORK/promptsrc_ours.log"), original fp32 $(acc "$WORK/promptsrc_orig32.log"), original fp16 $(acc "$WORK/promptsrc_orig16.log")"
    local ck=VLPromptLearner/model.pth.tar-2
    echo "-- ours (fp32) vs the original at fp32 (P10)"
    $PY scripts/parity/tower_parity.py compare "$init" "$WORK/promptsrc_ours/$ck" "$WORK/promptsrc_orig32/$ck"
    echo "-- ours (fp32) vs the original unpatched (fp16 on the CPU)"
    $PY scripts/parity/tower_parity.py compare "$init" "$WORK/promptsrc_ours/$ck" "$WORK/promptsrc_orig16/$ck" | tail -1
    FLAGS=(--eval-only --model-dir "$WORK/promptsrc_orig32" --load-epoch 2)
    run_ours PromptSRC "$cfg" "$WORK/promptsrc_ours_evals_orig" promptsrc_d1 "${opts[@]}" TRAINER.PROMPTSRC.PREC fp32
    FLAGS=(--eval-only --model-dir "$WORK/promptsrc_ours" --load-epoch 2)
    run_orig promptsrc_fp32 PromptSRC "$cfg" "$WORK/promptsrc_orig_evals_ours" promptsrc_d2 "${opts[@]}" TRAINER.PROMPTSRC.PREC fp32
    FLAGS=()
    echo "== PromptSRC checkpoints: ours on the original's $(acc "$WORK/promptsrc_ours_evals_orig.log"), the original on ours $(acc "$WORK/promptsrc_orig_evals_ours.log")"
}

cliplora() {
    # CLIP-LoRA is not Dassl-based: its own main.py on the same files. 4 shots = every train image (its
    # few-shot draw takes val before train, so the same seed draws other images than CoOp's order);
    # DROPOUT 1e-9: the original's dropout-0 path backpropagates through the weight without the LoRA
    # update (an in-place .data change after the forward), its default dropout > 0 path does not; a
    # rate of 1e-9 takes that path and drops nothing in practice.
    local init=$WORK/init_cliplora.pt cfg=configs/trainers/CLIP_LoRA/vit_b16.yaml
    $PY scripts/parity/tower_parity.py init cliplora "$init" --clip "$TINY_CLIP" > /dev/null
    rm -rf "$WORK"/cliplora_*
    fresh_data cliplora_d1; fresh_data cliplora_d2
    $PY train.py --root "$WORK/cliplora_d1" --seed 1 --trainer CLIP_LoRA --dataset-config-file configs/datasets/eurosat.yaml \
        --config-file "$cfg" --transforms normalize --output-dir "$WORK/cliplora_ours" --backbone "$TINY_CLIP" \
        DATASET.NUM_SHOTS 4 DATALOADER.TRAIN_X.BATCH_SIZE 40 DATALOADER.NUM_WORKERS 0 INPUT.SIZE "(32, 32)" \
        OPTIM.LR 0.002 TRAINER.CLIP_LORA.N_ITERS 1 TRAINER.CLIP_LORA.DROPOUT_RATE 1e-9 MODEL.INIT_WEIGHTS "$init" \
        > "$WORK/cliplora_ours.log" 2>&1
    local orig_args=(--root_path "$WORK/cliplora_d2" --dataset eurosat --shots 4 --backbone ViT-B/16 --dropout_rate 1e-9
                     --seed 1)
    (cd "$ORIG/cliplora" && LORA_INIT=$init $OPY main.py "${orig_args[@]}" --lr 0.002 --n_iters 1 --batch_size 40 \
        --save_path "$WORK/cliplora_orig" > "$WORK/cliplora_orig.log" 2>&1)
    local orig_file=$WORK/cliplora_orig/vitb16/eurosat/4shots/seed1
    echo "== CLIP-LoRA: accuracy ours $(acc "$WORK/cliplora_ours.log"), original $(grep -o 'Final test accuracy: [0-9.]*' "$WORK/cliplora_orig.log")"
    $PY scripts/parity/tower_parity.py compare-lora "$WORK/cliplora_ours/lora/model.pth.tar-4" "$orig_file/lora_weights.pt" \
        --init "$init"
    FLAGS=(--eval-only --model-dir "$orig_file")
    run_ours CLIP_LoRA "$cfg" "$WORK/cliplora_ours_evals_orig" cliplora_d1 DATASET.NUM_SHOTS 4 TRAINER.CLIP_LORA.DROPOUT_RATE 1e-9
    FLAGS=()
    mkdir -p "$WORK/cliplora_ours_as_orig/vitb16/eurosat/4shots/seed1"
    cp "$WORK/cliplora_ours/lora_weights.pt" "$WORK/cliplora_ours_as_orig/vitb16/eurosat/4shots/seed1/"
    (cd "$ORIG/cliplora" && $OPY main.py "${orig_args[@]}" --save_path "$WORK/cliplora_ours_as_orig" --eval_only \
        > "$WORK/cliplora_orig_evals_ours.log" 2>&1)
    echo "== CLIP-LoRA checkpoints: ours on the original's $(acc "$WORK/cliplora_ours_evals_orig.log"), the original on ours $(grep -o 'Test accuracy: [0-9.]*' "$WORK/cliplora_orig_evals_ours.log")"
}

for m in $METHODS; do "$m"; done
