#!/usr/bin/env bash
# One TaskRes setting for every seed, with the original main.sh arguments:
#   bash scripts/taskres/main.sh DATASET CFG ENHANCE SHOTS SCALE [options] [-- KEY VALUE ...]
# ENHANCE is "none" (regular base) or an enhanced-base file; SCALE is alpha.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

TR_USAGE="usage: [DATA=/datasets] [OUTPUT=./output] bash scripts/taskres/main.sh DATASET CFG ENHANCE SHOTS SCALE [options] [-- KEY VALUE ...]

  DATASET  a config name in configs/datasets/ (e.g. oxford_pets)
  CFG      a config name in configs/trainers/TaskRes/ (e.g. adam_lr2e-3_B256_ep200)
  ENHANCE  none, or the enhanced-base file (e.g. strong_base/OxfordPets/rn50_16shots/model.pth.tar)
  SHOTS    shots per class
  SCALE    residual scale alpha
Writes <OUTPUT>/<DATASET>/TaskRes/<CFG>_<backbone>_<regular|enhanced>-base_alpha<SCALE>_<SHOTS>shots/seed<S>.

options: --seeds \"1 2 3\", --backbone NAME (default: CFG's), --root DIR, --output DIR,
         --jobs N, --gpus 0,1,..., --submit slurm|local, --submit-opts \"K=V ...\", --dry-run"

tr_parse_args "seeds backbone root output jobs gpus submit submit-opts dry-run" "$@"
((${#POSITIONAL[@]} == 5)) || tr_die "main.sh takes 5 arguments (DATASET CFG ENHANCE SHOTS SCALE), got ${#POSITIONAL[@]}: run with --help"
dataset=${POSITIONAL[0]}
CFG_ARG=${POSITIONAL[1]}
enhance=${POSITIONAL[2]}
ALPHA_ARG=${POSITIONAL[4]}
tr_check_word_list datasets "$dataset" "${TR_KNOWN_DATASETS// /|}" "one of: $TR_KNOWN_DATASETS"
tr_check_word_list shots "${POSITIONAL[3]}" '[1-9][0-9]*' "a positive whole number"
[[ "$ALPHA_ARG" =~ ^[0-9]+(\.[0-9]+)?$ ]] || tr_die "SCALE '$ALPHA_ARG' is not a number such as 0.5"

base=enhanced
[[ "$enhance" == none ]] && base=regular
tr_taskres_runs "$dataset" "${POSITIONAL[3]}" "$base" "$enhance"
tr_finish
