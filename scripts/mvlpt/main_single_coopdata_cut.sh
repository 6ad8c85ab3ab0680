#!/usr/bin/env bash
# MVLPT target runs: few-shot prompt tuning on one CoOp dataset, the prompt initialised from a
# source run (the original's scripts/mvlpt/main_single_coopdata_cut.sh), for every seed:
#   bash scripts/mvlpt/main_single_coopdata_cut.sh TRAINER CFG NCTX SHOTS DATASET [options] [-- KEY VALUE ...]
set -euo pipefail
HERE="$(dirname "${BASH_SOURCE[0]}")"
source "$HERE/../taskres/common.sh"
source "$HERE/common.sh"

TR_USAGE="usage: [DATA=/datasets] [OUTPUT=./output] bash scripts/mvlpt/main_single_coopdata_cut.sh TRAINER CFG NCTX SHOTS DATASET [options] [-- KEY VALUE ...]

  TRAINER  CoOp (MCoOp), VPT (MVPT) or UPT (MUPT)
  CFG      a config name in configs/trainers/MVLPT/ (e.g. vit_b16)
  NCTX     prompt length (as the source run's)
  SHOTS    shots per class of the target (and, by default, of the source run)
  DATASET  the target, a config name (e.g. eurosat)
The prompt starts from the source run's seed-averaged prompt (scripts/mvlpt/avg_ckpt.py):
<OUTPUT>/<sources>/MVLPT/<TRAINER>/<CFG>_<SHOTS>shots/nctx<NCTX>_cscFalse_ctpmiddle/prompt_learner/model-best.pth.tar
Writes <OUTPUT>/<Dataset>/MVLPT/<TRAINER>/<CFG>_<SHOTS>shots/nctx<NCTX>_cscFalse_ctpmiddle_init-<src>/seed<S>.

options: --seeds \"1 2 3\", --sources \"$MV_SOURCES\" (the source run's datasets),
--source-shots K (the source run's shots), --model-dir DIR (any run folder holding prompt_learner/),
--scratch (no source: the prompt starts from its own initialisation), --backbone NAME (default: the
one CFG names; when given it is added to the folder names), --root DIR, --output DIR, --dry-run"

# Options of this script only; the rest go to tr_parse_args.
sources_arg="" source_shots="" model_dir="" scratch=0
rest=()
while (($#)); do
    case "$1" in
        --sources) (($# >= 2)) || tr_die "option '--sources' needs a value"; sources_arg=$2; shift 2 ;;
        --source-shots) (($# >= 2)) || tr_die "option '--source-shots' needs a value"; source_shots=$2; shift 2 ;;
        --model-dir) (($# >= 2)) || tr_die "option '--model-dir' needs a value"; model_dir=$(tr_abspath "$2"); shift 2 ;;
        --scratch) scratch=1; shift ;;
        --) rest+=("$@"); break ;;
        *) rest+=("$1"); shift ;;
    esac
done
tr_parse_args "seeds backbone root output dry-run" ${rest[@]+"${rest[@]}"}
mv_backbone_args
((${#POSITIONAL[@]} == 5)) || tr_die "main_single_coopdata_cut.sh takes 5 arguments (TRAINER CFG NCTX SHOTS DATASET), got ${#POSITIONAL[@]}: run with --help"
kind=${POSITIONAL[0]} cfg=${POSITIONAL[1]} nctx=${POSITIONAL[2]} shots=${POSITIONAL[3]} dataset=${POSITIONAL[4]}
mv_check_common "$kind" "$cfg" "$nctx" "$shots"
tr_check_word_list dataset "$dataset" "${TR_KNOWN_DATASETS// /|}" "one of: $TR_KNOWN_DATASETS"
[[ -z "$source_shots" || "$source_shots" =~ ^[1-9][0-9]*$ ]] || tr_die "--source-shots '$source_shots' is not a positive whole number"
((scratch == 0 || ${#model_dir} == 0)) || tr_die "--scratch and --model-dir exclude each other"
target=$(tr_dataset_class "$dataset")
mv_kind_opts "$kind" "$nctx"

init=()
src=scratch
if ((scratch == 0)); then
    if [[ -z "$model_dir" ]]; then
        srcs=$(mv_class_list "${sources_arg:-$MV_SOURCES}")
        model_dir="$OUTPUT/$srcs/MVLPT/$kind/${cfg}${MV_TAG}_${source_shots:-$shots}shots/$(mv_setting "$nctx")"
        [[ "$model_dir" == /* ]] || model_dir="$PWD/$model_dir"
    fi
    if [[ ! -f "$model_dir/prompt_learner/model-best.pth.tar" ]] && ((DRY_RUN == 0)); then
        tr_die "no source prompt at $model_dir/prompt_learner/model-best.pth.tar: run main_mt_coopdata_cut.sh and scripts/mvlpt/avg_ckpt.py first, or pass --model-dir DIR or --scratch"
    fi
    init=(--model-dir "$model_dir")
    # named by the source's path below OUTPUT when it lies there, so a moved OUTPUT keeps its names
    out_abs=$(tr_abspath "$OUTPUT")
    src="src$(printf '%s' "${model_dir#"$out_abs/"}" | sha1sum | cut -c1-8)"
fi

run="$OUTPUT/$target/MVLPT/$kind/${cfg}${MV_TAG}_${shots}shots/$(mv_setting "$nctx")_init-$src"
for seed in $SEEDS; do
    dir="$run/seed$seed"
    if tr_finished "$dir"; then
        tr_log "skip (finished): $dir"
        continue
    fi
    tr_exec "MVLPT $kind target $target ${shots}-shot seed$seed (init: ${model_dir:-scratch}) -> $dir" \
        "$PY" train.py \
        --root "$DATA" \
        --seed "$seed" \
        --trainer MVLPT \
        --config-file "configs/trainers/MVLPT/$cfg.yaml" \
        --output-dir "$dir" \
        --dataset "$target" \
        --shots "$shots" \
        --dataset-coop \
        ${init[@]+"${init[@]}"} \
        ${MV_BACKBONE[@]+"${MV_BACKBONE[@]}"} \
        "${MV_OPTS[@]}" \
        ${EXTRA_OPTS[@]+"${EXTRA_OPTS[@]}"} || true
done
tr_finish
