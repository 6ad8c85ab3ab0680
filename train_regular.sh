#!/usr/bin/env bash
# TaskRes with the regular base (CLIP's prompt text embeddings) on the few-shot
# benchmark: every dataset x shots x seed, skipping finished runs.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/scripts/taskres/common.sh"

TR_USAGE="usage: [DATA=/datasets] [OUTPUT=./output] bash train_regular.sh [options] [-- KEY VALUE ...]

Trains TaskRes with the regular base for each dataset, shot count and seed:
  <OUTPUT>/<dataset>/TaskRes/<cfg>_<backbone>_regular-base_alpha<alpha>_<K>shots/seed<S>
Finished runs (results_test.json present) are skipped; unfinished ones resume.

options:
  --datasets \"A B\"   datasets (default: the 11 of the benchmark)
  --shots \"1 16\"     shot counts (default: $TR_ALL_SHOTS)
  --seeds \"1\"        seeds (default: $TR_ALL_SEEDS)
  --backbone NAME    CLIP backbone (default: the trainer config's, RN50 for the defaults)
  --cfg NAME         trainer config for every run (default: lr 2e-4 for ImageNet, 2e-3
                     otherwise; ep100 up to 4 shots, ep200 above)
  --alpha A          residual scale for every run (default 0.5, oxford_flowers 1.0)
  --root DIR         dataset root (default \$DATA)
  --output DIR       output root (default \$OUTPUT or ./output)
  --jobs N           runs side by side on this machine (default 1; see README "Scale-out")
  --gpus 0,1,...     pin each parallel run to one of these GPUs, round-robin
                     (CUDA_VISIBLE_DEVICES); --gpus alone runs one per GPU
  --submit slurm     one Slurm job per run through submitit (local: try it here)
  --submit-opts \"K=V\" submitit parameters, e.g. \"slurm_partition=gpu timeout_min=600\"
  --dry-run          print the train.py commands instead of running them
  -- KEY VALUE ...   extra config opts for train.py (not part of the folder name: use a
                     separate --output for debug runs such as -- OPTIM.MAX_EPOCH 2)"

tr_parse_args "datasets shots seeds backbone cfg alpha root output jobs gpus submit submit-opts dry-run" "$@"
((${#POSITIONAL[@]} == 0)) || tr_die "unexpected argument '${POSITIONAL[0]}' (run with --help)"

for shots in $SHOTS; do
    for dataset in $DATASETS; do
        tr_taskres_runs "$dataset" "$shots" regular none
    done
done
tr_finish
