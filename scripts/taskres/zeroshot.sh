#!/usr/bin/env bash
# Zero-shot CLIP (no training, no seeds) on each dataset:
#   <OUTPUT>/<dataset>/ZeroshotCLIP/<backbone>/log.txt
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

TR_USAGE="usage: [DATA=/datasets] [OUTPUT=./output] bash scripts/taskres/zeroshot.sh [options] [-- KEY VALUE ...]

options:
  --datasets \"A B\"   datasets (default: the 11 of the benchmark; the DG targets
                     $TR_DG_TARGETS work too)
  --backbone NAME    CLIP backbone (default: the config's, RN50)
  --cfg NAME         config in configs/trainers/TaskRes/ (default: the 1-shot config of
                     each dataset; only its backbone, input and batch size matter)
  --root DIR         dataset root (default \$DATA)
  --output DIR       output root (default \$OUTPUT or ./output)
  --jobs N, --gpus 0,1,..., --submit slurm|local, --submit-opts \"K=V ...\"
                     run side by side / on Slurm (README \"Scale-out\")
  --dry-run          print the train.py commands instead of running them"

tr_parse_args "datasets backbone cfg root output jobs gpus submit submit-opts dry-run" "$@"
((${#POSITIONAL[@]} == 0)) || tr_die "unexpected argument '${POSITIONAL[0]}' (run with --help)"
for dataset in $DATASETS; do
    tr_zeroshot_run "$dataset"
done
tr_finish
