#!/usr/bin/env bash
# TaskRes with the enhanced base on the few-shot benchmark: first produces each missing
# enhanced base (strong_base/<DatasetClass>/<backbone>_<K>shots/model.pth.tar, trainer
# StrongBase), then trains every dataset x shots x seed on it, skipping finished runs.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/scripts/taskres/common.sh"

TR_USAGE="usage: [DATA=/datasets] [OUTPUT=./output] [STRONG_BASE=./strong_base] bash train_enhance.sh [options] [-- KEY VALUE ...]

Produces missing enhanced bases, then trains TaskRes on them for each dataset, shot count
and seed:
  <OUTPUT>/<dataset>/TaskRes/<cfg>_<backbone>_enhanced-base_alpha<alpha>_<K>shots/seed<S>
Finished runs (results_test.json present) are skipped; unfinished ones resume.

options:
  --datasets \"A B\"        datasets (default: the 11 of the benchmark)
  --shots \"1 16\"          shot counts (default: $TR_ALL_SHOTS)
  --seeds \"1\"             seeds of the TaskRes runs (default: $TR_ALL_SEEDS); bases use seed 1
  --backbone NAME         CLIP backbone (default: the trainer config's, RN50 for the defaults)
  --cfg NAME              trainer config for every TaskRes run (default: the original rule)
  --alpha A               residual scale for every run (default 0.5, oxford_flowers 1.0)
  --strong-base-root DIR  where enhanced bases live (default \$STRONG_BASE or ./strong_base)
  --strong-base-opts \"K V\" extra config opts for the StrongBase runs only
  --root DIR              dataset root (default \$DATA)
  --output DIR            output root (default \$OUTPUT or ./output)
  --jobs N                runs side by side on this machine (default 1; see README "Scale-out")
  --gpus 0,1,...          pin each parallel run to one of these GPUs, round-robin
                          (CUDA_VISIBLE_DEVICES); --gpus alone runs one per GPU
  --submit slurm          one Slurm job per run through submitit (local: try it here)
  --submit-opts \"K=V ..\"  submitit parameters, e.g. \"slurm_partition=gpu timeout_min=600\"
  --dry-run               print the train.py commands instead of running them
  -- KEY VALUE ...        extra config opts for every train.py call (StrongBase included)"

tr_parse_args "datasets shots seeds backbone cfg alpha strong-base-root strong-base-opts root output jobs gpus submit submit-opts dry-run" "$@"
((${#POSITIONAL[@]} == 0)) || tr_die "unexpected argument '${POSITIONAL[0]}' (run with --help)"
for dataset in $DATASETS; do
    tr_dataset_class "$dataset" >/dev/null  # fail now on a dataset without a class name
done

# Two passes: every missing base first (side by side under --jobs/--submit), then the
# TaskRes runs of each base that exists. The base is made with the runs' own backbone.
pending=()
for shots in $SHOTS; do
    for dataset in $DATASETS; do
        if ! tr_taskres_pending "$dataset" "$shots" enhanced; then
            tr_log "skip (all seeds finished): $dataset ${shots}-shot enhanced"
            continue
        fi
        pending+=("$dataset:$shots")
        backbone=$(tr_run_backbone "$dataset" "$shots")
        tr_strong_base "$dataset" "$shots" "$backbone" || true  # recorded; checked below
    done
done
tr_flush
for item in ${pending[@]+"${pending[@]}"}; do
    dataset=${item%:*}
    shots=${item#*:}
    backbone=$(tr_run_backbone "$dataset" "$shots")
    base_file=$(tr_strong_base_file "$dataset" "$shots" "$backbone")
    if ((!DRY_RUN)) && [[ ! -f "$base_file" ]]; then
        tr_fail "TaskRes $dataset ${shots}-shot enhanced-base: skipped, its enhanced base $base_file is missing"
        continue
    fi
    tr_taskres_runs "$dataset" "$shots" enhanced "$base_file"
done
tr_finish
