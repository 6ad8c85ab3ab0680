#!/usr/bin/env bash
# TaskRes with the regular base (CLIP's prompt text embeddings) on the few-shot
# benchmark: every dataset x shots x seed, skipping finished runs (--help for the options).
# The rules (configs per shot count, alpha, folders) are TaskRes' declared protocol; see scripts/plan.py.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/scripts/taskres/common.sh"
tr_workflow regular "$@"
