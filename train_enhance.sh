#!/usr/bin/env bash
# TaskRes with the enhanced base on the few-shot benchmark: first produces each missing
# enhanced base (strong_base/<DatasetClass>/<backbone>_<K>shots/model.pth.tar, trainer
# StrongBase), then trains every dataset x shots x seed on it, skipping finished runs (--help).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/scripts/taskres/common.sh"
tr_workflow enhance "$@"
