#!/usr/bin/env bash
# Evaluate trained TaskRes checkpoints on a target dataset for every seed, with the
# original eval.sh arguments:
#   bash scripts/taskres/eval.sh TARGET CFG OUTDIR MODELDIR [options] [-- KEY VALUE ...]
# loads MODELDIR/seed<S>/prompt_learner/model.pth.tar-<epoch>, writes OUTDIR/seed<S>.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
tr_workflow eval "$@"
