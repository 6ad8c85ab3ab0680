#!/usr/bin/env bash
# MVLPT source runs on ELEVATER's datasets: one prompt learned jointly on several ELEVATER tasks
# (the original's scripts/mvlpt/main_mt_elevater_cut.sh), for every seed:
#   bash scripts/mvlpt/main_mt_elevater_cut.sh TRAINER CFG NCTX SHOTS [options] [-- KEY VALUE ...]
# The same pieces as main_mt_coopdata_cut.sh (common.sh); the tasks are ELEVATER names, read by the
# Elevater dataset (no --dataset-coop), each scored by its ELEVATER metric in the original's log lines.
set -euo pipefail
HERE="$(dirname "${BASH_SOURCE[0]}")"
source "$HERE/../taskres/common.sh"
source "$HERE/common.sh"

TR_USAGE="usage: [DATA=/datasets] [OUTPUT=./output] bash scripts/mvlpt/main_mt_elevater_cut.sh TRAINER CFG NCTX SHOTS [options] [-- KEY VALUE ...]

  TRAINER  CoOp (MCoOp), VPT (MVPT), UPT (MUPT) or COCOOP: which prompt, as in the original
  CFG      a config name in configs/trainers/MVLPT/ (e.g. vit_b16)
  NCTX     prompt length
  SHOTS    shots per class of every task (DATASET.NUM_SAMPLES_PER_CLASS, ELEVATER's sampler)
Writes <OUTPUT>/ELEVATER[-<hash of --datasets>]/MVLPT/<TRAINER>/<CFG>_<SHOTS>shots/nctx<NCTX>_cscFalse_ctpmiddle/seed<S>.

options: --seeds \"1 2 3\", --datasets \"ELEVATER names\" (default: the original's 20 in its order,
less voc-2007-classification, which is multi-label), --backbone NAME, --root DIR (the folder
vision_datasets downloaded into), --output DIR, --dry-run"

tasks=$MV_ELEVATER_SOURCES
rest=()
while (($#)); do
    case "$1" in
        --datasets) (($# >= 2)) || tr_die "option '--datasets' needs a value"; tasks=$2; shift 2 ;;
        --) rest+=("$@"); break ;;
        *) rest+=("$1"); shift ;;
    esac
done
tr_parse_args "seeds backbone root output dry-run" ${rest[@]+"${rest[@]}"}
mv_backbone_args
((${#POSITIONAL[@]} == 4)) || tr_die "main_mt_elevater_cut.sh takes 4 arguments (TRAINER CFG NCTX SHOTS), got ${#POSITIONAL[@]}: run with --help"
kind=${POSITIONAL[0]} cfg=${POSITIONAL[1]} nctx=${POSITIONAL[2]} shots=${POSITIONAL[3]}
MV_EXTRA_KIND=COCOOP mv_check_common "$kind" "$cfg" "$nctx" "$shots"
tasks=$(echo $tasks)  # one space between names, so the default list is recognised
mv_check_elevater "--datasets" "$tasks"
mv_kind_opts "$kind" "$nctx"

run="$OUTPUT/$(mv_elevater_folder "$tasks")/MVLPT/$kind/${cfg}${MV_TAG}_${shots}shots/$(mv_setting "$nctx")"
for seed in $SEEDS; do
    dir="$run/seed$seed"
    if tr_finished "$dir"; then
        tr_log "skip (finished): $dir"
        continue
    fi
    tr_exec "MVLPT $kind ELEVATER source ${shots}-shot seed$seed -> $dir" \
        "$PY" train.py \
        --root "$DATA" \
        --seed "$seed" \
        --trainer MVLPT \
        --config-file "configs/trainers/MVLPT/$cfg.yaml" \
        --output-dir "$dir" \
        --dataset "${tasks// /,}" \
        --shots "$shots" \
        --multi-task \
        ${MV_BACKBONE[@]+"${MV_BACKBONE[@]}"} \
        "${MV_OPTS[@]}" \
        ${EXTRA_OPTS[@]+"${EXTRA_OPTS[@]}"} || true
done
tr_finish
