#!/usr/bin/env bash
# The paper's comparison in one command: methods x datasets x shots x seeds, each method with
# its declared protocol (its published per-shot rules, variants, producers), then (optionally)
# the DG and base-to-new protocols. Finished runs (results_test.json present) are skipped;
# unfinished ones resume. scripts/summarize.py then draws the figure and tables (--help).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/scripts/taskres/common.sh"
tr_workflow compare "$@"
