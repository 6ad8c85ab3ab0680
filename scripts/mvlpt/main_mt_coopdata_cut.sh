#!/usr/bin/env bash
# MVLPT source runs: one prompt learned jointly on several CoOp datasets (the original's
# scripts/mvlpt/main_mt_coopdata_cut.sh), for every seed:
#   bash scripts/mvlpt/main_mt_coopdata_cut.sh TRAINER CFG NCTX SHOTS [options] [-- KEY VALUE ...]
set -euo pipefail
HERE="$(dirname "${BASH_SOURCE[0]}")"
source "$HERE/../taskres/common.sh"
source "$HERE/common.sh"

TR_USAGE="usage: [DATA=/datasets] [OUTPUT=./output] bash scripts/mvlpt/main_mt_coopdata_cut.sh TRAINER CFG NCTX SHOTS [options] [-- KEY VALUE ...]

  TRAINER  CoOp (MCoOp), VPT (MVPT) or UPT (MUPT): which prompt, as in the original
  CFG      a config name in configs/trainers/MVLPT/ (the paper uses vit_b16)
  NCTX     prompt length (the paper: 16 for CoOp and VPT, 4 for UPT)
  SHOTS    shots per class of every source dataset
Writes <OUTPUT>/<Dataset,...>/MVLPT/<TRAINER>/<CFG>_<SHOTS>shots/nctx<NCTX>_cscFalse_ctpmiddle/seed<S>.
Then average the seeds' prompts with: python scripts/mvlpt/avg_ckpt.py <that folder without seed<S>>

options: --seeds \"1 2 3\", --datasets \"$MV_SOURCES\" (config names; the
default is the original's 11 in its order), --backbone NAME (default: the one CFG names; when
given it is added to the folder name), --root DIR, --output DIR, --dry-run"

user_datasets=0
for arg in "$@"; do
    [[ "$arg" == --datasets || "$arg" == --datasets=* ]] && user_datasets=1
    [[ "$arg" == -- ]] && break
done
tr_parse_args "seeds datasets backbone root output dry-run" "$@"
mv_backbone_args
((${#POSITIONAL[@]} == 4)) || tr_die "main_mt_coopdata_cut.sh takes 4 arguments (TRAINER CFG NCTX SHOTS), got ${#POSITIONAL[@]}: run with --help"
kind=${POSITIONAL[0]} cfg=${POSITIONAL[1]} nctx=${POSITIONAL[2]} shots=${POSITIONAL[3]}
mv_check_common "$kind" "$cfg" "$nctx" "$shots"
((user_datasets)) || DATASETS=$MV_SOURCES
sources=$(mv_class_list "$DATASETS")
mv_kind_opts "$kind" "$nctx"

run="$OUTPUT/$sources/MVLPT/$kind/${cfg}${MV_TAG}_${shots}shots/$(mv_setting "$nctx")"
for seed in $SEEDS; do
    dir="$run/seed$seed"
    if tr_finished "$dir"; then
        tr_log "skip (finished): $dir"
        continue
    fi
    tr_exec "MVLPT $kind source ${shots}-shot seed$seed -> $dir" \
        "$PY" train.py \
        --root "$DATA" \
        --seed "$seed" \
        --trainer MVLPT \
        --config-file "configs/trainers/MVLPT/$cfg.yaml" \
        --output-dir "$dir" \
        --dataset "$sources" \
        --shots "$shots" \
        --dataset-coop \
        --multi-task \
        ${MV_BACKBONE[@]+"${MV_BACKBONE[@]}"} \
        "${MV_OPTS[@]}" \
        ${EXTRA_OPTS[@]+"${EXTRA_OPTS[@]}"} || true
done
tr_finish
