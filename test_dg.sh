#!/usr/bin/env bash
# Domain generalization: evaluates the ImageNet 16-shot TaskRes checkpoints (regular and
# enhanced base, every seed) on ImageNet-V2, -Sketch, -A and -R (--help for the options).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/scripts/taskres/common.sh"
tr_workflow dg "$@"
