#!/usr/bin/env bash
# One TaskRes setting for every seed, with the original main.sh arguments:
#   bash scripts/taskres/main.sh DATASET CFG ENHANCE SHOTS SCALE [options] [-- KEY VALUE ...]
# ENHANCE is "none" (regular base) or an enhanced-base file; SCALE is alpha.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
tr_workflow main "$@"
