# Shared by every workflow script (train_regular.sh, train_enhance.sh, test_dg.sh, compare.sh,
# scripts/taskres/*.sh, scripts/mvlpt/*.sh): each is a thin entry point that hands its command
# line to the planner, scripts/plan.py, which holds every rule (read from the methods' declared
# protocols) and runs the runs through scripts/run_jobs.py. Source it, then: tr_workflow NAME "$@".
#
# The planner's python is $TR_RUNNER_PYTHON, else $PYTHON (the python of the train.py runs),
# else the repository's .venv, else python3.

TR_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

tr_workflow() {
    local py=${TR_RUNNER_PYTHON:-${PYTHON:-}}
    if [[ -z "$py" ]]; then
        py=python3
        [[ -x "$TR_ROOT/.venv/bin/python" ]] && py="$TR_ROOT/.venv/bin/python"
    fi
    if ! command -v "$py" >/dev/null 2>&1; then
        printf '[taskres] error: PYTHON=%s is not an executable; point PYTHON at a python with the requirements installed\n' "$py" >&2
        exit 2
    fi
    exec "$py" "$TR_ROOT/scripts/plan.py" "$@"  # exec: Ctrl-C and SIGTERM reach the planner itself
}
