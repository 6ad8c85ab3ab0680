#!/usr/bin/env bash
# MVLPT source runs on ELEVATER's datasets: one prompt learned jointly on several ELEVATER tasks
# (the original's scripts/mvlpt/main_mt_elevater_cut.sh), for every seed:
#   bash scripts/mvlpt/main_mt_elevater_cut.sh TRAINER CFG NCTX SHOTS [options] [-- KEY VALUE ...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../taskres/common.sh"
tr_workflow mvlpt_mt_elevater "$@"
