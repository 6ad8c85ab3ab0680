#!/usr/bin/env bash
# Produce the enhanced bases that are missing: for each dataset and shot count, trainer
# StrongBase tunes CLIP's text projection on the few-shot data (seed 1) and writes
#   <strong_base root>/<DatasetClass>/<backbone>_<K>shots/model.pth.tar
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
tr_workflow strong_base "$@"
