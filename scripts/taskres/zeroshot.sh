#!/usr/bin/env bash
# Zero-shot CLIP (no training, no seeds) on each dataset:
#   <OUTPUT>/<dataset>/ZeroshotCLIP/<backbone>/log.txt
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
tr_workflow zeroshot "$@"
