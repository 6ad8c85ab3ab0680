#!/usr/bin/env bash
# Domain generalization: evaluates the ImageNet 16-shot TaskRes checkpoints (regular and
# enhanced base, every seed) on ImageNet-V2, -Sketch, -A and -R.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/scripts/taskres/common.sh"

TR_USAGE="usage: [DATA=/datasets] [OUTPUT=./output] bash test_dg.sh [options] [-- KEY VALUE ...]

Evaluates <OUTPUT>/imagenet/TaskRes/<run>/seed<S> (the 16-shot runs of train_regular.sh and
train_enhance.sh) on each target, writing
  <OUTPUT>/dg/<target>/TaskRes/<run>/seed<S>
Finished evaluations (results_test.json present) are skipped.

options:
  --targets \"A B\"         targets (default: $TR_DG_TARGETS)
  --bases \"regular\"       which runs (default: regular enhanced)
  --seeds \"1\"             seeds (default: $TR_ALL_SEEDS)
  --shots K               shot count of the source runs (default 16)
  --backbone NAME         CLIP backbone of the source runs (default: their config's, RN50)
  --cfg NAME              trainer config the source runs used (default: the original rule)
  --eval-cfg NAME         evaluation config (default generalization_<backbone>, e.g.
                          generalization_rn50)
  --alpha A               residual scale of the source runs (default 0.5)
  --load-epoch N          checkpoint epoch (default: OPTIM.MAX_EPOCH of the extra opts, else
                          of the config)
  --strong-base-root DIR  where enhanced bases live (default \$STRONG_BASE or ./strong_base)
  --root DIR              dataset root (default \$DATA)
  --output DIR            output root (default \$OUTPUT or ./output)
  --jobs N                runs side by side on this machine (default 1; see README "Scale-out")
  --gpus 0,1,...          pin each parallel run to one of these GPUs, round-robin
                          (CUDA_VISIBLE_DEVICES); --gpus alone runs one per GPU
  --submit slurm          one Slurm job per run through submitit (local: try it here)
  --submit-opts \"K=V ..\"  submitit parameters, e.g. \"slurm_partition=gpu timeout_min=600\"
  --dry-run               print the train.py commands instead of running them
  -- KEY VALUE ...        extra config opts for train.py"

# The DG source is the 16-shot run unless --shots says otherwise.
args=("$@")
has_shots=0
for a in "${args[@]+"${args[@]}"}"; do
    [[ "$a" == -- ]] && break
    [[ "$a" == --shots || "$a" == --shots=* ]] && has_shots=1
done
((has_shots)) || args=(--shots 16 "${args[@]+"${args[@]}"}")

tr_parse_args "targets bases seeds shots backbone cfg eval-cfg alpha load-epoch strong-base-root root output jobs gpus submit submit-opts dry-run" "${args[@]}"
((${#POSITIONAL[@]} == 0)) || tr_die "unexpected argument '${POSITIONAL[0]}' (run with --help)"
[[ "$SHOTS" =~ ^[0-9]+$ ]] || tr_die "--shots takes one shot count for test_dg.sh, got '$SHOTS'"

source_cfg=$(tr_cfg_for imagenet "$SHOTS")
backbone=$(tr_run_backbone imagenet "$SHOTS")
eval_cfg=$(tr_dg_cfg_for "$backbone")
alpha=$(tr_alpha_for imagenet)
epoch=$(tr_max_epoch "$source_cfg")
enhanced_file=$(tr_strong_base_file imagenet "$SHOTS" "$backbone")

for base in $BASES; do
    name=$(tr_run_name "$source_cfg" "$(tr_backbone_tag "$backbone")" "$base" "$alpha" "$SHOTS")
    enhance=none
    [[ "$base" == enhanced ]] && enhance=$enhanced_file
    for target in $TARGETS; do
        tr_eval_runs "$target" "$eval_cfg" "$OUTPUT/dg/$target/TaskRes/$name" \
            "$OUTPUT/imagenet/TaskRes/$name" "$alpha" "$enhance" "$epoch" "$backbone"
    done
done
tr_finish
