#!/usr/bin/env bash
# MVLPT target runs on one ELEVATER dataset, the prompt initialised from a source run (the
# original's scripts/mvlpt/main_single_elevater_cut.sh), for every seed:
#   bash scripts/mvlpt/main_single_elevater_cut.sh TRAINER CFG NCTX SHOTS DATASET [options] [-- KEY VALUE ...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../taskres/common.sh"
tr_workflow mvlpt_single_elevater "$@"
