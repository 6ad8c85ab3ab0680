#!/usr/bin/env bash
# Produce the enhanced bases that are missing: for each dataset and shot count, trainer
# StrongBase tunes CLIP's text projection on the few-shot data (seed 1) and writes
#   <strong_base root>/<DatasetClass>/<backbone>_<K>shots/model.pth.tar
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

TR_USAGE="usage: [DATA=/datasets] [OUTPUT=./output] [STRONG_BASE=./strong_base] bash scripts/taskres/strong_base.sh [options] [-- KEY VALUE ...]

options:
  --datasets \"A B\"        datasets (default: the 11 of the benchmark)
  --shots \"1 16\"          shot counts (default: $TR_ALL_SHOTS)
  --backbone NAME         CLIP backbone (default: the StrongBase config's, RN50)
  --strong-base-root DIR  where enhanced bases go (default \$STRONG_BASE or ./strong_base)
  --root DIR              dataset root (default \$DATA)
  --output DIR            output root for the StrongBase logs (default \$OUTPUT or ./output)
  --jobs N                runs side by side on this machine (default 1; see README "Scale-out")
  --gpus 0,1,...          pin each parallel run to one of these GPUs, round-robin
                          (CUDA_VISIBLE_DEVICES); --gpus alone runs one per GPU
  --submit slurm          one Slurm job per run through submitit (local: try it here)
  --submit-opts \"K=V ..\"  submitit parameters, e.g. \"slurm_partition=gpu timeout_min=600\"
  --dry-run               print the train.py commands instead of running them
  -- KEY VALUE ...        extra config opts for train.py"

tr_parse_args "datasets shots backbone strong-base-root root output jobs gpus submit submit-opts dry-run" "$@"
((${#POSITIONAL[@]} == 0)) || tr_die "unexpected argument '${POSITIONAL[0]}' (run with --help)"
for dataset in $DATASETS; do
    tr_dataset_class "$dataset" >/dev/null  # fail now on a dataset without a class name
done
backbone=$(tr_backbone_for "$(tr_cfg_file configs/trainers/StrongBase "$TR_STRONG_BASE_CFG")")
for shots in $SHOTS; do
    for dataset in $DATASETS; do
        tr_strong_base "$dataset" "$shots" "$backbone" || true  # recorded; tr_finish reports it
    done
done
tr_finish
