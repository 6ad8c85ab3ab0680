#!/usr/bin/env bash
# The paper's comparison in one command: methods x datasets x shots x seeds, each method with
# its published per-shot rules, then (optionally) the DG and base-to-new protocols.
# Finished runs (results_test.json present) are skipped; unfinished ones resume.
# scripts/summarize.py then draws the figure and tables from the same output root.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/scripts/taskres/common.sh"

CMP_ALL_METHODS="ZeroshotCLIP ZeroshotCLIP2 LinearProbe CoOp CoCoOp CLIP_Adapter TipAdapter TipAdapterF TaskRes TaskRes-enhanced"
CMP_ALL_PROTOCOLS="fewshot dg base2new"
# Methods evaluated on new classes after training on base classes (CoCoOp's protocol).
CMP_B2N_METHODS="CoOp CoCoOp"
CMP_B2N_SHOTS=16

TR_USAGE="usage: [DATA=/datasets] [OUTPUT=./output] bash compare.sh [options] [-- KEY VALUE ...]

Runs every method of the comparison on each dataset, shot count and seed:
  <OUTPUT>/<dataset>/<Trainer>/<cfg>_<backbone>[_<variant>]_<K>shots/seed<S>
  <OUTPUT>/<dataset>/ZeroshotCLIP/<backbone>, <OUTPUT>/<dataset>/ZeroshotCLIP2/<backbone>
  <OUTPUT>/dg/<target>/<Trainer>/<source run folder>/seed<S>          (protocol dg)
  <OUTPUT>/base2new/{train_base,test_new}/<dataset>/<Trainer>/<run folder>/seed<S>  (base2new)
TaskRes runs share their folders with train_regular.sh / train_enhance.sh.
Then: python scripts/summarize.py <OUTPUT>

options:
  --methods \"A B\"     methods (default: $CMP_ALL_METHODS)
  --datasets \"A B\"    datasets (default: the 11 of the benchmark)
  --shots \"1 16\"      shot counts (default: $TR_ALL_SHOTS)
  --seeds \"1\"         seeds (default: $TR_ALL_SEEDS)
  --protocols \"...\"   fewshot, dg (ImageNet 16-shot runs -> V2/Sketch/A/R; needs imagenet and
                      16 among --datasets/--shots), base2new ($CMP_B2N_METHODS, 16 shots)
                      (default: fewshot dg)
  --backbone NAME     CLIP backbone (default RN50)
  --root DIR          dataset root (default \$DATA)
  --output DIR        output root (default \$OUTPUT or ./output)
  --jobs N            runs side by side on this machine (default 1; see README "Scale-out")
  --gpus 0,1,...      pin each parallel run to one of these GPUs, round-robin; --gpus alone
                      runs one per GPU
  --submit slurm      one Slurm job per run through submitit (local: try it here)
  --submit-opts \"K=V ..\"  submitit parameters, e.g. \"slurm_partition=gpu timeout_min=600\"
  --dry-run           print the train.py commands instead of running them
  -- KEY VALUE ...    extra config opts for every train.py call (not part of the folder name:
                      use a separate --output for debug runs such as -- OPTIM.MAX_EPOCH 2)"

# --methods and --protocols are ours; everything else goes to the shared parser.
METHODS="$CMP_ALL_METHODS"
PROTOCOLS="fewshot dg"
rest=()
while (($#)); do
    case "$1" in
        --) rest+=("$@"); break ;;
        --methods=* | --protocols=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
        --methods | --protocols)
            (($# >= 2)) || tr_die "option '$1' needs a value"
            if [[ "$1" == --methods ]]; then METHODS=$2; else PROTOCOLS=$2; fi
            shift 2 ;;
        *) rest+=("$1"); shift ;;
    esac
done
tr_parse_args "datasets shots seeds backbone root output jobs gpus submit submit-opts dry-run" ${rest[@]+"${rest[@]}"}
((${#POSITIONAL[@]} == 0)) || tr_die "unexpected argument '${POSITIONAL[0]}' (run with --help)"
# One backbone for every method of a comparison (the paper's RN50 unless --backbone): each
# method's config family follows it, so it is fixed here rather than read from each config.
BACKBONE=${BACKBONE_ARG:-RN50}
BACKBONE_ARG=$BACKBONE  # the TaskRes helpers of common.sh then use it too, whatever their config names
TAG=$(tr_backbone_tag "$BACKBONE")
tr_check_word_list methods "$METHODS" "${CMP_ALL_METHODS// /|}" "one of: $CMP_ALL_METHODS"
tr_check_word_list protocols "$PROTOCOLS" "${CMP_ALL_PROTOCOLS// /|}" "one of: $CMP_ALL_PROTOCOLS"
for ((i = 0; i < ${#EXTRA_OPTS[@]}; i += 2)); do
    case "${EXTRA_OPTS[i]}" in
        TRAINER.COOP.* | TRAINER.COCOOP.*)
            tr_die "${EXTRA_OPTS[i]} after -- would change CoOp/CoCoOp runs without changing their folder names; edit cmp_variant in compare.sh instead" ;;
    esac
done

# CoOp's config family of a backbone: its ViT-B/16 configs for ViT-B/16, the RN50 ones
# otherwise (the input pipeline is the same; --backbone sets the model either way).
cmp_family() {
    case "$TAG" in
        vitb16) echo vit_b16 ;;
        *) echo rn50 ;;
    esac
}

# Trainer config of METHOD on DATASET at SHOTS shots (a file in configs/trainers/<Trainer>/),
# the rules of trainers/method_rules.py:
# CoOp and CLIP-Adapter: CoOp's epochs (50 for 1 shot, 100 for 2 and 4, 200 for 8 and 16;
# ImageNet 50 at every shot count); CoCoOp: its one published config (10 epochs, batch 1);
# Tip-Adapter(-F): one config per dataset; the others one config per backbone family.
cmp_cfg() {
    local method=$1 dataset=$2 shots=$3 family
    family=$(cmp_family)
    case "$method" in
        CoOp | CLIP_Adapter)
            if [[ "$dataset" == imagenet ]] || ((shots <= 1)); then echo "${family}_ep50"
            elif ((shots <= 4)); then echo "${family}_ep100"
            else echo "$family"; fi ;;
        CoCoOp) echo vit_b16_c4_ep10_batch1_ctxv1 ;;
        TipAdapter | TipAdapterF) echo "${family}_${dataset}" ;;
        *) echo "$family" ;;
    esac
}

cmp_trainer_dir() {  # configs/trainers/<dir>
    echo "$1"
}

# Opts that make a variant of a method, and the folder-name part that records them.
# CoOp: the README's main setting (16 context tokens, unified context, class token at the end).
cmp_variant_opts() {
    case "$1" in
        CoOp) echo "TRAINER.COOP.N_CTX 16 TRAINER.COOP.CSC False TRAINER.COOP.CLASS_TOKEN_POSITION end" ;;
    esac
}
cmp_variant_name() {
    case "$1" in
        CoOp) echo "_nctx16_cscFalse_ctpend" ;;
    esac
}

cmp_run_name() {  # method dataset shots -> folder name of a trained run
    echo "$(cmp_cfg "$1" "$2" "$3")_${TAG}$(cmp_variant_name "$1")$(tr_views_suffix)_${3}shots"
}

# Last epoch of a config (the checkpoint an evaluation loads): OPTIM.MAX_EPOCH after --,
# else MAX_EPOCH in the file.
cmp_max_epoch() {
    local file=$1 i line
    for ((i = 0; i + 1 < ${#EXTRA_OPTS[@]}; i += 2)); do
        if [[ "${EXTRA_OPTS[i]}" == OPTIM.MAX_EPOCH ]]; then
            echo "${EXTRA_OPTS[i + 1]}"
            return
        fi
    done
    line=$(grep -E '^[[:space:]]*MAX_EPOCH:[[:space:]]*[0-9]+' "$file" 2>/dev/null | head -n 1 || true)
    [[ -n "$line" ]] && { echo "${line##*:}" | tr -d '[:space:]'; return; }
    echo ""
}

# A config file must exist before a run starts (under --dry-run the command is printed anyway).
cmp_config_ok() {
    local file=$1 label=$2
    ((DRY_RUN)) || [[ -f "$file" ]] && return 0
    tr_fail "$label: config $file does not exist in this checkout (is the method implemented here?)"
    return 1
}

# Few-shot training runs of a non-TaskRes method on one (dataset, shots), every seed.
# $4: extra args placed before the opts (base2new: DATASET.SUBSAMPLE_CLASSES base).
cmp_train_runs() {
    local method=$1 dataset=$2 shots=$3 outroot=$4
    shift 4
    local cfg file name seed dir variant=()
    cfg=$(cmp_cfg "$method" "$dataset" "$shots")
    file="configs/trainers/$(cmp_trainer_dir "$method")/$cfg.yaml"
    name=$(cmp_run_name "$method" "$dataset" "$shots")
    read -r -a variant <<<"$(cmp_variant_opts "$method")"
    for seed in $SEEDS; do
        dir="$outroot/$method/$name/seed$seed"
        if tr_finished "$dir"; then
            tr_log "skip (finished): $dir"
            continue
        fi
        cmp_config_ok "$file" "$method $dataset ${shots}-shot seed$seed" || continue
        tr_exec "$method $dataset ${shots}-shot seed$seed -> $dir" \
            "$PY" train.py \
            --root "$DATA" \
            --seed "$seed" \
            --trainer "$method" \
            --dataset-config-file "configs/datasets/$dataset.yaml" \
            --config-file "$file" \
            --output-dir "$dir" \
            --backbone "$BACKBONE" \
            DATASET.NUM_SHOTS "$shots" \
            ${variant[@]+"${variant[@]}"} \
            "$@" \
            ${EXTRA_OPTS[@]+"${EXTRA_OPTS[@]}"} || true
    done
}

# Zero-shot (no shots, no seeds) of ZeroshotCLIP2 on one dataset.
cmp_zeroshot2_run() {
    local dataset=$1 outroot=$2 file dir
    file="configs/trainers/ZeroshotCLIP2/$(cmp_family).yaml"
    dir="$outroot/ZeroshotCLIP2/$TAG"
    if tr_finished "$dir"; then
        tr_log "skip (finished): $dir"
        return 0
    fi
    cmp_config_ok "$file" "ZeroshotCLIP2 $dataset" || return 0
    tr_exec "ZeroshotCLIP2 $dataset -> $dir" \
        "$PY" train.py \
        --root "$DATA" \
        --trainer ZeroshotCLIP2 \
        --dataset-config-file "configs/datasets/$dataset.yaml" \
        --config-file "$file" \
        --output-dir "$dir" \
        --backbone "$BACKBONE" \
        --eval-only \
        ${EXTRA_OPTS[@]+"${EXTRA_OPTS[@]}"} || true
}

# Evaluate the trained runs <modelroot>/seed<S> of a method on a target dataset.
cmp_eval_runs() {
    local method=$1 target=$2 cfg=$3 outdir=$4 modelroot=$5
    shift 5
    local file seed dir mdir epoch variant=()
    file="configs/trainers/$(cmp_trainer_dir "$method")/$cfg.yaml"
    epoch=$(cmp_max_epoch "$file")
    read -r -a variant <<<"$(cmp_variant_opts "$method")"
    for seed in $SEEDS; do
        dir="$outdir/seed$seed"
        mdir="$modelroot/seed$seed"
        if tr_finished "$dir"; then
            tr_log "skip (finished): $dir"
            continue
        fi
        if ((!DRY_RUN)) && ! tr_finished "$mdir"; then
            tr_fail "$method on $target seed$seed: the trained run $mdir is not finished (train it first)"
            continue
        fi
        tr_exec "eval $method on $target seed$seed -> $dir" \
            "$PY" train.py \
            --root "$DATA" \
            --seed "$seed" \
            --trainer "$method" \
            --dataset-config-file "configs/datasets/$target.yaml" \
            --config-file "$file" \
            --output-dir "$dir" \
            --model-dir "$mdir" \
            ${epoch:+--load-epoch "$epoch"} \
            --eval-only \
            --backbone "$BACKBONE" \
            ${variant[@]+"${variant[@]}"} \
            "$@" \
            ${EXTRA_OPTS[@]+"${EXTRA_OPTS[@]}"} || true
    done
}

# Few-shot runs of a method on one dataset. TaskRes-enhanced only makes its enhanced bases
# here and lists (dataset, shots) in CMP_ENHANCED_PENDING: cmp_enhanced_runs trains on them
# once every base exists (queued runs end at a tr_flush barrier in between).
CMP_ENHANCED_PENDING=()
cmp_fewshot() {
    local method=$1 dataset=$2 shots
    case "$method" in
        ZeroshotCLIP) tr_zeroshot_run "$dataset"; return ;;
        ZeroshotCLIP2) cmp_zeroshot2_run "$dataset" "$OUTPUT/$dataset"; return ;;
    esac
    for shots in $SHOTS; do
        case "$method" in
            TaskRes) tr_taskres_runs "$dataset" "$shots" regular none ;;
            TaskRes-enhanced)
                tr_taskres_pending "$dataset" "$shots" enhanced || {
                    tr_log "skip (all seeds finished): $dataset ${shots}-shot enhanced"
                    continue
                }
                tr_strong_base "$dataset" "$shots" "$(tr_run_backbone "$dataset" "$shots")" || true  # checked below
                CMP_ENHANCED_PENDING+=("$dataset:$shots") ;;
            *) cmp_train_runs "$method" "$dataset" "$shots" "$OUTPUT/$dataset" ;;
        esac
    done
}

cmp_enhanced_runs() {
    local item dataset shots base_file
    for item in ${CMP_ENHANCED_PENDING[@]+"${CMP_ENHANCED_PENDING[@]}"}; do
        dataset=${item%:*}
        shots=${item#*:}
        base_file=$(tr_strong_base_file "$dataset" "$shots" "$(tr_run_backbone "$dataset" "$shots")")
        if ((!DRY_RUN)) && [[ ! -f "$base_file" ]]; then
            tr_fail "TaskRes $dataset ${shots}-shot enhanced-base: skipped, its enhanced base $base_file is missing"
            continue
        fi
        tr_taskres_runs "$dataset" "$shots" enhanced "$base_file"
    done
}

# TaskRes' generalization config of a known backbone, else its training config (a weights file).
cmp_taskres_dg_cfg() {  # training cfg, backbone
    case "$(tr_backbone_tag "$2")" in
        rn50 | rn101 | vitb16 | vitb32) tr_dg_cfg_for "$2" ;;
        *) echo "$1" ;;
    esac
}

# ImageNet 16-shot runs of each method evaluated on the four ImageNet variants.
cmp_dg() {
    local method=$1 target name cfg alpha base enhance backbone
    for target in $TARGETS; do
        case "$method" in
            ZeroshotCLIP) tr_zeroshot_run "$target" ;;
            ZeroshotCLIP2) cmp_zeroshot2_run "$target" "$OUTPUT/$target" ;;
            TaskRes | TaskRes-enhanced)
                base=regular enhance=none
                backbone=$(tr_run_backbone imagenet 16)
                if [[ "$method" == TaskRes-enhanced ]]; then
                    base=enhanced
                    enhance=$(tr_strong_base_file imagenet 16 "$backbone")
                fi
                cfg=$(tr_cfg_for imagenet 16)
                alpha=$(tr_alpha_for imagenet)
                name=$(tr_run_name "$cfg" "$(tr_backbone_tag "$backbone")" "$base" "$alpha" 16)
                tr_eval_runs "$target" "$(cmp_taskres_dg_cfg "$cfg" "$backbone")" "$OUTPUT/dg/$target/TaskRes/$name" \
                    "$OUTPUT/imagenet/TaskRes/$name" "$alpha" "$enhance" "$(tr_max_epoch "$cfg")" "$backbone" ;;
            *)
                name=$(cmp_run_name "$method" imagenet 16)
                cmp_eval_runs "$method" "$target" "$(cmp_cfg "$method" imagenet 16)" \
                    "$OUTPUT/dg/$target/$method/$name" "$OUTPUT/imagenet/$method/$name" ;;
        esac
    done
}

# Train on the base half of the classes, test on the new half (CoCoOp's protocol).
cmp_base2new_train() {
    cmp_train_runs "$1" "$2" "$CMP_B2N_SHOTS" "$OUTPUT/base2new/train_base/$2" \
        DATASET.SUBSAMPLE_CLASSES base
}
cmp_base2new_test() {
    local method=$1 dataset=$2 name
    name=$(cmp_run_name "$method" "$dataset" "$CMP_B2N_SHOTS")
    cmp_eval_runs "$method" "$dataset" "$(cmp_cfg "$method" "$dataset" "$CMP_B2N_SHOTS")" \
        "$OUTPUT/base2new/test_new/$dataset/$method/$name" \
        "$OUTPUT/base2new/train_base/$dataset/$method/$name" \
        DATASET.NUM_SHOTS "$CMP_B2N_SHOTS" DATASET.SUBSAMPLE_CLASSES new
}

has_word() {  # word list
    [[ " $2 " == *" $1 "* ]]
}

# Three stages, each ending at a barrier when runs are queued (--jobs/--gpus/--submit; run
# one after the other they are already in order): the training runs and the enhanced bases;
# the TaskRes runs on those bases; the evaluations of trained checkpoints (DG, base-to-new).
do_dg=0
has_word dg "$PROTOCOLS" && has_word imagenet "$DATASETS" && has_word 16 "$SHOTS" && do_dg=1
for method in $METHODS; do
    if has_word fewshot "$PROTOCOLS"; then
        for dataset in $DATASETS; do
            cmp_fewshot "$method" "$dataset"
        done
    fi
    if has_word base2new "$PROTOCOLS" && has_word "$method" "$CMP_B2N_METHODS"; then
        for dataset in $DATASETS; do
            cmp_base2new_train "$method" "$dataset"
        done
    fi
done
tr_flush
cmp_enhanced_runs
tr_flush
for method in $METHODS; do
    ((do_dg)) && cmp_dg "$method"
    if has_word base2new "$PROTOCOLS" && has_word "$method" "$CMP_B2N_METHODS"; then
        for dataset in $DATASETS; do
            cmp_base2new_test "$method" "$dataset"
        done
    fi
done
tr_finish
