#!/usr/bin/env bash
# MVLPT target runs on one ELEVATER dataset, the prompt initialised from a source run (the
# original's scripts/mvlpt/main_single_elevater_cut.sh), for every seed:
#   bash scripts/mvlpt/main_single_elevater_cut.sh TRAINER CFG NCTX SHOTS DATASET [options] [-- KEY VALUE ...]
# The same pieces as main_single_coopdata_cut.sh (common.sh); DATASET is an ELEVATER name, read by
# the Elevater dataset (no --dataset-coop) and scored by its ELEVATER metric in the original's log lines.
set -euo pipefail
HERE="$(dirname "${BASH_SOURCE[0]}")"
source "$HERE/../taskres/common.sh"
source "$HERE/common.sh"

TR_USAGE="usage: [DATA=/datasets] [OUTPUT=./output] bash scripts/mvlpt/main_single_elevater_cut.sh TRAINER CFG NCTX SHOTS DATASET [options] [-- KEY VALUE ...]

  TRAINER  CoOp (MCoOp), VPT (MVPT), UPT (MUPT) or COCOOP
  CFG      a config name in configs/trainers/MVLPT/ (e.g. vit_b16)
  NCTX     prompt length (as the source run's)
  SHOTS    shots per class of the target (and, by default, of the source run)
  DATASET  the target, an ELEVATER name (e.g. cifar-10)
As the original, the prompt starts from the seed-averaged prompt of the CoOp-data source run
(main_mt_coopdata_cut.sh + scripts/mvlpt/avg_ckpt.py), COCOOP from scratch:
<OUTPUT>/<sources>/MVLPT/<TRAINER>/<CFG>_<SHOTS>shots/nctx<NCTX>_cscFalse_ctpmiddle/prompt_learner/model-best.pth.tar
Writes <OUTPUT>/<DATASET>/MVLPT/<TRAINER>/<CFG>_<SHOTS>shots/nctx<NCTX>_cscFalse_ctpmiddle_init-<src>/seed<S>.

options: --seeds \"1 2 3\", --sources \"$MV_SOURCES\" (the CoOp-data source run's datasets),
--elevater-sources \"names\" (an ELEVATER source run of main_mt_elevater_cut.sh instead), --source-shots K,
--model-dir DIR (any run folder holding prompt_learner/), --scratch, --backbone NAME, --root DIR,
--output DIR, --dry-run"

sources_arg="" elevater_sources="" source_shots="" model_dir="" scratch=0
rest=()
while (($#)); do
    case "$1" in
        --sources) (($# >= 2)) || tr_die "option '--sources' needs a value"; sources_arg=$2; shift 2 ;;
        --elevater-sources) (($# >= 2)) || tr_die "option '--elevater-sources' needs a value"; elevater_sources=$(echo $2); shift 2 ;;
        --source-shots) (($# >= 2)) || tr_die "option '--source-shots' needs a value"; source_shots=$2; shift 2 ;;
        --model-dir) (($# >= 2)) || tr_die "option '--model-dir' needs a value"; model_dir=$(tr_abspath "$2"); shift 2 ;;
        --scratch) scratch=1; shift ;;
        --) rest+=("$@"); break ;;
        *) rest+=("$1"); shift ;;
    esac
done
tr_parse_args "seeds backbone root output dry-run" ${rest[@]+"${rest[@]}"}
mv_backbone_args
((${#POSITIONAL[@]} == 5)) || tr_die "main_single_elevater_cut.sh takes 5 arguments (TRAINER CFG NCTX SHOTS DATASET), got ${#POSITIONAL[@]}: run with --help"
kind=${POSITIONAL[0]} cfg=${POSITIONAL[1]} nctx=${POSITIONAL[2]} shots=${POSITIONAL[3]} target=${POSITIONAL[4]}
MV_EXTRA_KIND=COCOOP mv_check_common "$kind" "$cfg" "$nctx" "$shots"
mv_check_elevater DATASET "$target"
[[ -z "$elevater_sources" ]] || mv_check_elevater "--elevater-sources" "$elevater_sources"
[[ -z "$source_shots" || "$source_shots" =~ ^[1-9][0-9]*$ ]] || tr_die "--source-shots '$source_shots' is not a positive whole number"
((scratch == 0 || ${#model_dir} == 0)) || tr_die "--scratch and --model-dir exclude each other"
[[ -z "$sources_arg" || -z "$elevater_sources" ]] || tr_die "--sources and --elevater-sources exclude each other"
[[ "$kind" != COCOOP || -n "$model_dir" ]] || scratch=1  # the original's COCOOP target has no source
mv_kind_opts "$kind" "$nctx"

init=()
src=scratch
if ((scratch == 0)); then
    if [[ -z "$model_dir" ]]; then
        if [[ -n "$elevater_sources" ]]; then
            srcs=$(mv_elevater_folder "$elevater_sources")
        else
            srcs=$(mv_class_list "${sources_arg:-$MV_SOURCES}")
        fi
        model_dir="$OUTPUT/$srcs/MVLPT/$kind/${cfg}${MV_TAG}_${source_shots:-$shots}shots/$(mv_setting "$nctx")"
        [[ "$model_dir" == /* ]] || model_dir="$PWD/$model_dir"
    fi
    if [[ ! -f "$model_dir/prompt_learner/model-best.pth.tar" ]] && ((DRY_RUN == 0)); then
        tr_die "no source prompt at $model_dir/prompt_learner/model-best.pth.tar: run the source script and scripts/mvlpt/avg_ckpt.py first, or pass --model-dir DIR or --scratch"
    fi
    init=(--model-dir "$model_dir")
    out_abs=$(tr_abspath "$OUTPUT")  # named by the source's path below OUTPUT, as the CoOp targets
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
        ${init[@]+"${init[@]}"} \
        ${MV_BACKBONE[@]+"${MV_BACKBONE[@]}"} \
        "${MV_OPTS[@]}" \
        ${EXTRA_OPTS[@]+"${EXTRA_OPTS[@]}"} || true
done
tr_finish
