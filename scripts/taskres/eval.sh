#!/usr/bin/env bash
# Evaluate trained TaskRes checkpoints on a target dataset for every seed, with the
# original eval.sh arguments:
#   bash scripts/taskres/eval.sh TARGET CFG OUTDIR MODELDIR [options] [-- KEY VALUE ...]
# loads MODELDIR/seed<S>/prompt_learner/model.pth.tar-<epoch>, writes OUTDIR/seed<S>.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

TR_USAGE="usage: [DATA=/datasets] bash scripts/taskres/eval.sh TARGET CFG OUTDIR MODELDIR [options] [-- KEY VALUE ...]

  TARGET    a config name in configs/datasets/ (e.g. imagenetv2)
  CFG       evaluation config in configs/trainers/TaskRes/ (e.g. generalization_rn50)
  OUTDIR    results go to OUTDIR/seed<S>
  MODELDIR  checkpoints are read from MODELDIR/seed<S>

options:
  --seeds \"1 2 3\"         seeds (default: $TR_ALL_SEEDS)
  --load-epoch N          checkpoint epoch (default: OPTIM.MAX_EPOCH of the extra opts, else of CFG)
  --alpha A               residual scale the checkpoints were trained with (default 0.5)
  --enhanced-base FILE    the enhanced base the checkpoints were trained on (default none)
  --backbone NAME         CLIP backbone (default: CFG's)
  --root DIR              dataset root (default \$DATA)
  --jobs N                runs side by side on this machine (default 1; see README "Scale-out")
  --gpus 0,1,...          pin each parallel run to one of these GPUs, round-robin
                          (CUDA_VISIBLE_DEVICES); --gpus alone runs one per GPU
  --submit slurm          one Slurm job per run through submitit (local: try it here)
  --submit-opts \"K=V ..\"  submitit parameters, e.g. \"slurm_partition=gpu timeout_min=600\"
  --dry-run               print the train.py commands instead of running them"

# --enhanced-base is this script's own option; take it out before the shared parser.
enhance=none
args=()
while (($#)); do
    case "$1" in
        --) args+=("$@"); break ;;
        --enhanced-base) (($# >= 2)) || tr_die "option '--enhanced-base' needs a value"; enhance=$2; shift 2 ;;
        --enhanced-base=*) enhance=${1#*=}; shift ;;
        *) args+=("$1"); shift ;;
    esac
done
[[ "$enhance" == none || "$enhance" == /* ]] || enhance=$(tr_abspath "$enhance")

tr_parse_args "seeds load-epoch alpha backbone root jobs gpus submit submit-opts dry-run" "${args[@]+"${args[@]}"}"
((${#POSITIONAL[@]} == 4)) || tr_die "eval.sh takes 4 arguments (TARGET CFG OUTDIR MODELDIR), got ${#POSITIONAL[@]}: run with --help"
target=${POSITIONAL[0]}
cfg=${POSITIONAL[1]}
tr_check_word_list target "$target" "${TR_KNOWN_DATASETS// /|}" "one of: $TR_KNOWN_DATASETS"
# OUTDIR and MODELDIR were given relative to the caller's directory, not the repo root.
outdir=${POSITIONAL[2]}
modeldir=${POSITIONAL[3]}
[[ "$outdir" == /* ]] || outdir="$OLDPWD/$outdir"
[[ "$modeldir" == /* ]] || modeldir="$OLDPWD/$modeldir"

backbone=$(tr_backbone_for "$(tr_cfg_file configs/trainers/TaskRes "$cfg")")
epoch=$(tr_max_epoch "$cfg")
tr_eval_runs "$target" "$cfg" "$outdir" "$modeldir" "${ALPHA_ARG:-0.5}" "$enhance" "$epoch" "$backbone"
tr_finish
