#!/usr/bin/env bash
# MVLPT source runs: one prompt learned jointly on several CoOp datasets (the original's
# scripts/mvlpt/main_mt_coopdata_cut.sh), for every seed:
#   bash scripts/mvlpt/main_mt_coopdata_cut.sh TRAINER CFG NCTX SHOTS [options] [-- KEY VALUE ...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../taskres/common.sh"
tr_workflow mvlpt_mt "$@"
