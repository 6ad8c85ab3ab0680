# Shared functions of the TaskRes shell workflows (train_regular.sh, train_enhance.sh,
# test_dg.sh and scripts/taskres/*.sh). Source it; it defines functions and a few
# globals and runs nothing.
#
# Call order in a workflow:
#   source scripts/taskres/common.sh
#   tr_parse_args "<allowed options>" "$@"   # fills the globals below, cds to the repo root
#   tr_taskres_runs / tr_strong_base / tr_eval_runs / tr_zeroshot_run ...
#   tr_finish                                  # exit 1 if any run failed
#
# Conventions (shared with scripts/summarize.py):
#   <OUTPUT>/<dataset>/TaskRes/<cfg>_<tag>_<base>-base_alpha<alpha>_<K>shots/seed<S>
#   <OUTPUT>/<dataset>/StrongBase/<tag>_<K>shots/seed1
#   <OUTPUT>/<dataset>/ZeroshotCLIP/<tag>
#   <OUTPUT>/dg/<target>/TaskRes/<same run folder name>/seed<S>
# where tag is the backbone name lower-cased without "/" and "-" (ViT-B/16 -> vitb16); the
# backbone is --backbone when given, else MODEL.BACKBONE.NAME of the run's trainer config.
# A run is finished when its folder holds results_test.json; finished runs are skipped,
# unfinished ones are started again (train.py resumes from the last checkpoint).

TR_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# The 11 few-shot datasets, in the order of the original scripts.
TR_ALL_DATASETS="stanford_cars oxford_flowers caltech101 dtd fgvc_aircraft oxford_pets food101 ucf101 eurosat sun397 imagenet"
TR_ALL_SHOTS="1 2 4 8 16"
TR_ALL_SEEDS="1 2 3"
TR_DG_TARGETS="imagenetv2 imagenet_sketch imagenet_a imagenet_r"
TR_KNOWN_DATASETS="$TR_ALL_DATASETS $TR_DG_TARGETS fashion_mnist image_folder"
TR_STRONG_BASE_CFG="adam_lr2e-4_ep50"

TR_FAILED=()
TR_MAIN_PID=$$

tr_log() {
    printf '[taskres] %s\n' "$*" >&2
}

# A die inside $(...) runs in a subshell: its exit alone would leave the workflow going on
# with an empty value, so it also signals the main shell, which then exits 2 as well.
trap 'exit 2' USR1
tr_die() {
    printf '[taskres] error: %s\n' "$*" >&2
    if [[ "$BASHPID" != "$TR_MAIN_PID" ]]; then
        kill -USR1 "$TR_MAIN_PID" 2>/dev/null || true
    fi
    exit 2
}

# Dataset config name -> dataset class name (the folder name under strong_base/).
tr_dataset_class() {
    case "$1" in
        oxford_pets) echo OxfordPets ;;
        oxford_flowers) echo OxfordFlowers ;;
        fgvc_aircraft) echo FGVCAircraft ;;
        dtd) echo DescribableTextures ;;
        eurosat) echo EuroSAT ;;
        stanford_cars) echo StanfordCars ;;
        food101) echo Food101 ;;
        sun397) echo SUN397 ;;
        caltech101) echo Caltech101 ;;
        ucf101) echo UCF101 ;;
        imagenet) echo ImageNet ;;
        fashion_mnist) echo FashionMNIST ;;
        image_folder) echo ImageFolder ;;
        *) tr_die "no dataset class known for '$1' (enhanced bases exist for: $TR_ALL_DATASETS fashion_mnist image_folder)" ;;
    esac
}

# Backbone name -> folder tag: RN50 -> rn50, ViT-B/16 -> vitb16, a weights file -> its
# stem (same rule as trainers/clip_trainer.py backbone_tag, which names strong_base/ files).
tr_backbone_tag() {
    local tag=$1
    if [[ -f "$tag" ]]; then
        tag=$(basename "$tag")
        tag=${tag%.*}
    fi
    tag="${tag,,}"
    tag="${tag//\//}"
    tag="${tag//-/}"
    tag="${tag//@/}"
    echo "$tag"
}

# Path of a trainer config name; a name without a file ends the workflow with the list of names.
tr_cfg_file() {
    local dir=$1 cfg=$2
    if [[ ! -f "$dir/$cfg.yaml" ]]; then
        local names
        names=$(cd "$dir" 2>/dev/null && ls -- *.yaml 2>/dev/null | sed 's/\.yaml$//' | tr '\n' ' ')
        tr_die "no trainer config '$cfg': $dir/$cfg.yaml does not exist (names there: ${names% })"
    fi
    echo "$dir/$cfg.yaml"
}

# MODEL.BACKBONE.NAME of a yaml config file (empty when it names none).
tr_cfg_backbone() {
    awk '
        /^[^[:space:]#]/ { model = ($1 == "MODEL:"); inbb = 0; next }
        model && /^[[:space:]]+BACKBONE:[[:space:]]*$/ { inbb = 1; next }
        inbb && /^[[:space:]]+NAME:/ {
            sub(/^[[:space:]]+NAME:[[:space:]]*/, ""); sub(/[[:space:]]+#.*$/, ""); gsub(/^["\x27]|["\x27][[:space:]]*$/, "")
            print; exit
        }
    ' "$1"
}

# Backbone of the runs of a trainer config file: --backbone when given, else the config's
# MODEL.BACKBONE.NAME (so --cfg adam_lr2e-4_B256_ep200_ViT16 trains ViT-B/16 and says so in
# the folder name).
tr_backbone_for() {
    if [[ -n "$BACKBONE_ARG" ]]; then
        echo "$BACKBONE_ARG"
        return
    fi
    local name
    name=$(tr_cfg_backbone "$1")
    [[ -n "$name" ]] || tr_die "config $1 names no backbone (MODEL.BACKBONE.NAME); pass --backbone NAME, e.g. --backbone RN50"
    echo "$name"
}

# Trainer config of a TaskRes run: ImageNet lr 2e-4, the others 2e-3; up to 4 shots
# 100 epochs, more shots 200 (the original scripts' rule). --cfg overrides it.
tr_cfg_for() {
    local dataset=$1 shots=$2
    if [[ -n "$CFG_ARG" ]]; then
        echo "$CFG_ARG"
        return
    fi
    local lr=2e-3 ep=200
    [[ "$dataset" == imagenet ]] && lr=2e-4
    ((shots <= 4)) && ep=100
    echo "adam_lr${lr}_B256_ep${ep}"
}

# Residual scale alpha: 1.0 for OxfordFlowers, 0.5 elsewhere; --alpha overrides it.
tr_alpha_for() {
    if [[ -n "$ALPHA_ARG" ]]; then
        echo "$ALPHA_ARG"
    elif [[ "$1" == oxford_flowers ]]; then
        echo 1.0
    else
        echo 0.5
    fi
}

# "_views<V>" when FEATURE_CACHE.TRAIN_VIEWS is passed after -- with a value other than the
# default (read from engine/config.py, its one definition), else nothing: V changes the numbers,
# so a run with another V must not share, or be skipped as, the default run's folder.
tr_views_suffix() {
    local i default line
    for ((i = 0; i + 1 < ${#EXTRA_OPTS[@]}; i += 2)); do
        [[ "${EXTRA_OPTS[i]}" == FEATURE_CACHE.TRAIN_VIEWS ]] || continue
        line=$(grep -E '^_C\.FEATURE_CACHE\.TRAIN_VIEWS[[:space:]]*=' "$TR_ROOT/engine/config.py" | head -n 1)
        default=$(echo "${line#*=}" | sed 's/#.*//' | tr -d '[:space:]')
        [[ "${EXTRA_OPTS[i + 1]}" == "$default" ]] || echo "_views${EXTRA_OPTS[i + 1]}"
        return
    done
}

# The -- opts without TRAINER.TaskRes.* pairs, into the array OTHER_OPTS: for the StrongBase and
# ZeroshotCLIP runs of a workflow, which do not read TaskRes's keys (train.py refuses them there).
tr_other_trainer_opts() {
    local i
    OTHER_OPTS=()
    for ((i = 0; i + 1 < ${#EXTRA_OPTS[@]}; i += 2)); do
        [[ "${EXTRA_OPTS[i]}" == TRAINER.TaskRes.* ]] && continue
        OTHER_OPTS+=("${EXTRA_OPTS[i]}" "${EXTRA_OPTS[i + 1]}")
    done
}

# Folder name of a TaskRes run; it names every varied setting so runs never collide.
tr_run_name() {
    local cfg=$1 tag=$2 base=$3 alpha=$4 shots=$5
    echo "${cfg}_${tag}_${base}-base_alpha${alpha}$(tr_views_suffix)_${shots}shots"
}

# Generalization (DG evaluation) config of a backbone; --eval-cfg overrides it.
tr_dg_cfg_for() {
    if [[ -n "$EVAL_CFG_ARG" ]]; then
        echo "$EVAL_CFG_ARG"
        return
    fi
    case "$(tr_backbone_tag "$1")" in
        rn50) echo generalization_rn50 ;;
        rn101) echo generalization_rn101 ;;
        vitb16) echo generalization_vit16 ;;
        vitb32) echo generalization_vit32 ;;
        *) tr_die "no generalization config for backbone '$1'; pass --eval-cfg NAME (a file in configs/trainers/TaskRes/)" ;;
    esac
}

tr_strong_base_file() {
    local dataset=$1 shots=$2 backbone=$3 cls
    cls=$(tr_dataset_class "$dataset")
    echo "$STRONG_BASE_ROOT/$cls/$(tr_backbone_tag "$backbone")_${shots}shots/model.pth.tar"
}

# Epoch whose checkpoint an evaluation loads: --load-epoch, else OPTIM.MAX_EPOCH among the
# extra opts, else MAX_EPOCH of the trainer config file, else the _ep<N> in its name.
tr_max_epoch() {
    local cfg=$1 i
    if [[ -n "$LOAD_EPOCH_ARG" ]]; then
        echo "$LOAD_EPOCH_ARG"
        return
    fi
    for ((i = 0; i + 1 < ${#EXTRA_OPTS[@]}; i += 2)); do
        if [[ "${EXTRA_OPTS[i]}" == OPTIM.MAX_EPOCH ]]; then
            echo "${EXTRA_OPTS[i + 1]}"
            return
        fi
    done
    local file="configs/trainers/TaskRes/$cfg.yaml" line
    if [[ -f "$file" ]]; then
        line=$(grep -E '^[[:space:]]*MAX_EPOCH:[[:space:]]*[0-9]+' "$file" | head -n 1 || true)
        if [[ -n "$line" ]]; then
            echo "${line##*:}" | tr -d '[:space:]'
            return
        fi
    fi
    if [[ "$cfg" =~ _ep([0-9]+) ]]; then
        echo "${BASH_REMATCH[1]}"
        return
    fi
    tr_die "cannot tell the last epoch of config '$cfg'; pass --load-epoch N"
}

tr_abspath() {
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s\n' "$PWD/$1" ;;
    esac
}

tr_resolve_python() {
    if [[ -n "${PYTHON:-}" ]]; then
        command -v "$PYTHON" >/dev/null 2>&1 ||
            tr_die "PYTHON=$PYTHON is not an executable; point PYTHON at a python with the requirements installed"
        echo "$PYTHON"
    elif [[ -x .venv/bin/python ]]; then
        echo .venv/bin/python
    elif command -v python3 >/dev/null 2>&1; then
        echo python3
    else
        tr_die "no python found: create .venv (see requirements.txt) or set PYTHON=/path/to/python"
    fi
}

tr_check_word_list() {  # name, value, allowed pattern (a regex for one word)
    local name=$1 value=$2 pattern=$3 word
    [[ -n "${value// /}" ]] || tr_die "--$name needs at least one value"
    for word in $value; do
        [[ "$word" =~ ^($pattern)$ ]] || tr_die "--$name: '$word' is not valid (expected $4)"
    done
}

tr_usage_exit() {
    printf '%s\n' "${TR_USAGE:-usage: see the header of $0}"
    exit "${1:-0}"
}

# Parse the command line into globals. $1 lists the options this script accepts.
# Globals: DATASETS SHOTS SEEDS BACKBONE_ARG CFG_ARG EVAL_CFG_ARG ALPHA_ARG LOAD_EPOCH_ARG
# TARGETS BASES DRY_RUN DATA OUTPUT STRONG_BASE_ROOT PY EXTRA_OPTS POSITIONAL
# JOBS GPUS SUBMIT SUBMIT_OPTS (parallel runs, see tr_exec)
tr_parse_args() {
    local allowed=" $1 "
    shift
    DATASETS="$TR_ALL_DATASETS"
    SHOTS="$TR_ALL_SHOTS"
    SEEDS="$TR_ALL_SEEDS"
    TARGETS="$TR_DG_TARGETS"
    BASES="regular enhanced"
    BACKBONE_ARG=""  # empty: each run's backbone comes from its trainer config
    JOBS=""
    GPUS=""
    SUBMIT=""
    SUBMIT_OPTS=""
    CFG_ARG=""
    EVAL_CFG_ARG=""
    ALPHA_ARG=""
    LOAD_EPOCH_ARG=""
    STRONG_BASE_OPTS=""
    DRY_RUN=0
    EXTRA_OPTS=()
    POSITIONAL=()
    local data="${DATA:-}" output="${OUTPUT:-}" sbroot="${STRONG_BASE:-}"

    local opt value
    while (($#)); do
        opt=$1
        value=""
        if [[ "$opt" == --*=* ]]; then
            value="${opt#*=}"
            opt="${opt%%=*}"
            set -- "$opt" "$value" "${@:2}"
        fi
        case "$opt" in
            -h | --help) tr_usage_exit 0 ;;
            --) shift; EXTRA_OPTS=("$@"); break ;;
            --dry-run)
                [[ "$allowed" == *" dry-run "* ]] || tr_die "$0 does not take --dry-run"
                DRY_RUN=1; shift; continue ;;
            --*)
                [[ "$allowed" == *" ${opt#--} "* ]] ||
                    tr_die "unknown option '$opt' for $0 (run with --help for the options)"
                (($# >= 2)) || tr_die "option '$opt' needs a value"
                value=$2
                shift 2 ;;
            *) POSITIONAL+=("$opt"); shift; continue ;;
        esac
        case "$opt" in
            --datasets) DATASETS=$value ;;
            --shots) SHOTS=$value ;;
            --seeds) SEEDS=$value ;;
            --targets) TARGETS=$value ;;
            --bases) BASES=$value ;;
            --backbone) BACKBONE_ARG=$value ;;
            --jobs) JOBS=$value ;;
            --gpus) GPUS=$value ;;
            --submit) SUBMIT=$value ;;
            --submit-opts) SUBMIT_OPTS=$value ;;
            --cfg) CFG_ARG=$value ;;
            --eval-cfg) EVAL_CFG_ARG=$value ;;
            --alpha) ALPHA_ARG=$value ;;
            --load-epoch) LOAD_EPOCH_ARG=$value ;;
            --root) data=$value ;;
            --output) output=$value ;;
            --strong-base-root) sbroot=$value ;;
            --strong-base-opts) STRONG_BASE_OPTS=$value ;;
        esac
    done

    local known="${TR_KNOWN_DATASETS// /|}"
    tr_check_word_list datasets "$DATASETS" "$known" "one of: $TR_KNOWN_DATASETS"
    tr_check_word_list targets "$TARGETS" "${TR_DG_TARGETS// /|}" "one of: $TR_DG_TARGETS"
    tr_check_word_list shots "$SHOTS" '[1-9][0-9]*' "a positive whole number"
    tr_check_word_list seeds "$SEEDS" '[1-9][0-9]*' "a positive whole number"
    tr_check_word_list bases "$BASES" 'regular|enhanced' "regular or enhanced"
    [[ -z "$ALPHA_ARG" || "$ALPHA_ARG" =~ ^[0-9]+(\.[0-9]+)?$ ]] ||
        tr_die "--alpha '$ALPHA_ARG' is not a number such as 0.5"
    [[ -z "$LOAD_EPOCH_ARG" || "$LOAD_EPOCH_ARG" =~ ^[1-9][0-9]*$ ]] ||
        tr_die "--load-epoch '$LOAD_EPOCH_ARG' is not a positive whole number"
    [[ -z "$BACKBONE_ARG" || "$BACKBONE_ARG" =~ ^[A-Za-z0-9/@._-]+$ ]] ||
        tr_die "--backbone '$BACKBONE_ARG' is not a backbone name such as RN50 or ViT-B/16"
    [[ ! -f "$BACKBONE_ARG" ]] || BACKBONE_ARG=$(tr_abspath "$BACKBONE_ARG")  # train.py runs from the repo root
    [[ -z "$JOBS" || "$JOBS" =~ ^[1-9][0-9]*$ ]] || tr_die "--jobs '$JOBS' is not a positive whole number"
    [[ -z "$GPUS" || "$GPUS" =~ ^[0-9]+(,[0-9]+)*$ ]] || tr_die "--gpus '$GPUS' is not a comma-separated list of GPU ids such as 0,1,2,3"
    [[ -z "$SUBMIT" || "$SUBMIT" == slurm || "$SUBMIT" == local ]] ||
        tr_die "--submit '$SUBMIT' is not valid (expected slurm, or local to try the submission on this machine)"
    if [[ -z "$JOBS" ]]; then  # --gpus alone runs one job per GPU
        local ids=(${GPUS//,/ })
        JOBS=${#ids[@]}
        ((JOBS > 0)) || JOBS=1
    fi

    # Settings that name the output folder must come from the options, or two different
    # runs would share one folder and the second would be skipped as finished.
    ((${#EXTRA_OPTS[@]} % 2 == 0)) ||
        tr_die "extra opts after -- must be KEY VALUE pairs, got an odd count: ${EXTRA_OPTS[*]}"
    local i
    for ((i = 0; i < ${#EXTRA_OPTS[@]}; i++)); do
        [[ "${EXTRA_OPTS[i]}" != --* ]] ||
            tr_die "'${EXTRA_OPTS[i]}' comes after --, where only KEY VALUE config opts go; put options before --"
    done
    for ((i = 0; i < ${#EXTRA_OPTS[@]}; i += 2)); do
        case "${EXTRA_OPTS[i]}" in
            DATASET.NUM_SHOTS) tr_die "pass --shots instead of DATASET.NUM_SHOTS after --, so the output folder names the shot count" ;;
            TRAINER.TaskRes.RESIDUAL_SCALE) tr_die "pass --alpha instead of TRAINER.TaskRes.RESIDUAL_SCALE after --, so the output folder names alpha" ;;
            MODEL.BACKBONE.NAME) tr_die "pass --backbone instead of MODEL.BACKBONE.NAME after --, so the output folder names the backbone" ;;
        esac
    done

    # Paths the user gave are relative to where the script was started; resolve them
    # before moving to the repository root, where train.py and configs/ live.
    if [[ -z "$data" ]]; then
        tr_die "no dataset root: set DATA=/path/to/datasets or pass --root DIR"
    fi
    DATA=$(tr_abspath "$data")
    if [[ -n "$output" ]]; then
        OUTPUT=$(tr_abspath "$output")
    else
        OUTPUT=output
    fi
    if [[ -n "$sbroot" ]]; then
        STRONG_BASE_ROOT=$(tr_abspath "$sbroot")
    else
        STRONG_BASE_ROOT=strong_base
    fi
    cd "$TR_ROOT"
    PY=$(tr_resolve_python)
}

# Print a command as one shell-quoted line.
tr_print_cmd() {
    local out
    printf -v out '%q ' "$@"
    printf '%s\n' "${out% }"
}

# True when runs go to scripts/run_jobs.py (--jobs N > 1, --gpus, --submit) instead of
# running one after the other here.
tr_queued() {
    ((!DRY_RUN)) && { ((JOBS > 1)) || [[ -n "$GPUS" || -n "$SUBMIT" ]]; }
}

# Run one command (or print it under --dry-run). A failure is recorded and reported,
# and the caller goes on with the next run; returns non-zero on failure. With --jobs,
# --gpus or --submit the command is queued instead (returns 0): tr_flush runs the queue.
tr_exec() {
    local label=$1
    shift
    if ((DRY_RUN)); then
        tr_print_cmd "$@"
        return 0
    fi
    if tr_queued; then
        tr_enqueue "$label" "$@"
        return 0
    fi
    tr_log "start: $label"
    local rc=0
    "$@" || rc=$?
    if ((rc != 0)); then
        tr_log "FAILED (exit $rc): $label"
        TR_FAILED+=("$label")
        return 1
    fi
    return 0
}

tr_fail() {  # record a failure that is not a command's exit status
    tr_log "FAILED: $1"
    TR_FAILED+=("$1")
}

# Queue of runs for tr_flush: one file per run, its label on the first line and then its
# argv NUL-separated (arguments may hold any character but NUL).
tr_enqueue() {
    if [[ -z "${TR_QUEUE:-}" ]]; then
        TR_QUEUE=$(mktemp -d "${TMPDIR:-/tmp}/taskres-queue.XXXXXX")
        trap 'rm -rf "$TR_QUEUE"' EXIT
        TR_QUEUED=0
    fi
    local file
    printf -v file '%s/%06d.run' "$TR_QUEUE" "$TR_QUEUED"
    { printf '%s\n' "$1"; shift; printf '%s\0' "$@"; } >"$file"
    TR_QUEUED=$((TR_QUEUED + 1))
}

# Run the queued runs side by side (or on the cluster) and wait for all of them: a barrier,
# so train_enhance.sh makes every base before the runs that need it. The runner's python is
# $TR_RUNNER_PYTHON, else the workflow's python (it needs submitit only for --submit).
tr_flush() {
    [[ -n "${TR_QUEUE:-}" ]] && ((TR_QUEUED > 0)) || return 0
    local runner=${TR_RUNNER_PYTHON:-$PY} failed="$TR_QUEUE/failed" label
    local args=(scripts/run_jobs.py --queue "$TR_QUEUE" --jobs "$JOBS" --log-dir "$OUTPUT/jobs" --failed "$failed")
    [[ -n "$GPUS" ]] && args+=(--gpus "$GPUS")
    [[ -n "$SUBMIT" ]] && args+=(--submit "$SUBMIT")
    [[ -n "$SUBMIT_OPTS" ]] && args+=(--submit-opts "$SUBMIT_OPTS")
    : >"$failed"
    "$runner" "${args[@]}" || [[ -s "$failed" ]] ||
        tr_die "the run scheduler scripts/run_jobs.py failed (see above); finished runs are kept, run the same command again"
    while IFS= read -r label; do
        [[ -n "$label" ]] && TR_FAILED+=("$label")
    done <"$failed"
    rm -f "$TR_QUEUE"/*.run
    TR_QUEUED=0
}

tr_finished() {
    [[ -f "$1/results_test.json" ]]
}

# TaskRes training runs of one (dataset, shots, base) for every seed in SEEDS.
# base is regular or enhanced; enhance is "none" or the enhanced-base file.
tr_taskres_runs() {
    local dataset=$1 shots=$2 base=$3 enhance=$4
    local cfg alpha name seed dir cfg_file backbone
    cfg=$(tr_cfg_for "$dataset" "$shots")
    cfg_file=$(tr_cfg_file configs/trainers/TaskRes "$cfg")
    backbone=$(tr_backbone_for "$cfg_file")
    alpha=$(tr_alpha_for "$dataset")
    name=$(tr_run_name "$cfg" "$(tr_backbone_tag "$backbone")" "$base" "$alpha" "$shots")
    for seed in $SEEDS; do
        dir="$OUTPUT/$dataset/TaskRes/$name/seed$seed"
        if tr_finished "$dir"; then
            tr_log "skip (finished): $dir"
            continue
        fi
        tr_exec "TaskRes $dataset ${shots}-shot $base-base seed$seed -> $dir" \
            "$PY" train.py \
            --root "$DATA" \
            --seed "$seed" \
            --trainer TaskRes \
            --dataset-config-file "configs/datasets/$dataset.yaml" \
            --config-file "$cfg_file" \
            --output-dir "$dir" \
            --enhanced-base "$enhance" \
            --backbone "$backbone" \
            DATASET.NUM_SHOTS "$shots" \
            TRAINER.TaskRes.RESIDUAL_SCALE "$alpha" \
            ${EXTRA_OPTS[@]+"${EXTRA_OPTS[@]}"} || true
    done
}

# Backbone of the TaskRes runs of (dataset, shots): --backbone, else their config's.
tr_run_backbone() {
    local cfg_file
    cfg_file=$(tr_cfg_file configs/trainers/TaskRes "$(tr_cfg_for "$1" "$2")")
    tr_backbone_for "$cfg_file"
}

# True when some seed of a TaskRes (dataset, shots, base) still has to run.
tr_taskres_pending() {
    local dataset=$1 shots=$2 base=$3 cfg alpha name seed backbone
    cfg=$(tr_cfg_for "$dataset" "$shots")
    backbone=$(tr_run_backbone "$dataset" "$shots")
    alpha=$(tr_alpha_for "$dataset")
    name=$(tr_run_name "$cfg" "$(tr_backbone_tag "$backbone")" "$base" "$alpha" "$shots")
    for seed in $SEEDS; do
        tr_finished "$OUTPUT/$dataset/TaskRes/$name/seed$seed" || return 0
    done
    return 1
}

# Produce the enhanced base of (dataset, shots) for a backbone unless its file exists.
# Returns non-zero when it is still missing afterwards (under --dry-run or queued: never).
tr_strong_base() {
    local dataset=$1 shots=$2 backbone=$3 file dir
    file=$(tr_strong_base_file "$dataset" "$shots" "$backbone")
    if [[ -f "$file" ]]; then
        tr_log "skip (exists): $file"
        return 0
    fi
    dir="$OUTPUT/$dataset/StrongBase/$(tr_backbone_tag "$backbone")_${shots}shots/seed1"
    local sb_opts=()
    [[ -n "$STRONG_BASE_OPTS" ]] && read -r -a sb_opts <<<"$STRONG_BASE_OPTS"
    tr_other_trainer_opts
    tr_exec "StrongBase $dataset ${shots}-shot -> $file" \
        "$PY" train.py \
        --root "$DATA" \
        --seed 1 \
        --trainer StrongBase \
        --dataset-config-file "configs/datasets/$dataset.yaml" \
        --config-file "configs/trainers/StrongBase/$TR_STRONG_BASE_CFG.yaml" \
        --output-dir "$dir" \
        --backbone "$backbone" \
        DATASET.NUM_SHOTS "$shots" \
        STRONG_BASE.ROOT "$STRONG_BASE_ROOT" \
        ${OTHER_OPTS[@]+"${OTHER_OPTS[@]}"} \
        ${sb_opts[@]+"${sb_opts[@]}"} || return 1
    if ((!DRY_RUN)) && ! tr_queued && [[ ! -f "$file" ]]; then
        tr_fail "StrongBase $dataset ${shots}-shot finished but did not write $file"
        return 1
    fi
    return 0
}

# Evaluate the checkpoints MODELDIR/seed<S> on a target dataset for every seed in SEEDS,
# writing to OUTDIR/seed<S>.
tr_eval_runs() {
    local target=$1 cfg=$2 outdir=$3 modeldir=$4 alpha=$5 enhance=$6 epoch=$7 backbone=$8
    local seed dir mdir ckpt cfg_file
    cfg_file=$(tr_cfg_file configs/trainers/TaskRes "$cfg")
    for seed in $SEEDS; do
        dir="$outdir/seed$seed"
        mdir="$modeldir/seed$seed"
        if tr_finished "$dir"; then
            tr_log "skip (finished): $dir"
            continue
        fi
        ckpt="$mdir/prompt_learner/model.pth.tar-$epoch"
        if ((!DRY_RUN)) && [[ ! -f "$ckpt" ]]; then
            tr_fail "eval on $target seed$seed: checkpoint $ckpt is missing (train it first, or pass --load-epoch N)"
            continue
        fi
        tr_exec "eval $target seed$seed -> $dir" \
            "$PY" train.py \
            --root "$DATA" \
            --seed "$seed" \
            --trainer TaskRes \
            --dataset-config-file "configs/datasets/$target.yaml" \
            --config-file "$cfg_file" \
            --output-dir "$dir" \
            --model-dir "$mdir" \
            --load-epoch "$epoch" \
            --eval-only \
            --enhanced-base "$enhance" \
            --backbone "$backbone" \
            TRAINER.TaskRes.RESIDUAL_SCALE "$alpha" \
            ${EXTRA_OPTS[@]+"${EXTRA_OPTS[@]}"} || true
    done
}

# Zero-shot CLIP on one dataset (no seeds, no shots).
tr_zeroshot_run() {
    local dataset=$1 cfg dir cfg_file backbone
    cfg=$(tr_cfg_for "$dataset" 1)
    cfg_file=$(tr_cfg_file configs/trainers/TaskRes "$cfg")
    backbone=$(tr_backbone_for "$cfg_file")
    dir="$OUTPUT/$dataset/ZeroshotCLIP/$(tr_backbone_tag "$backbone")"
    tr_other_trainer_opts
    if tr_finished "$dir"; then
        tr_log "skip (finished): $dir"
        return 0
    fi
    tr_exec "ZeroshotCLIP $dataset -> $dir" \
        "$PY" train.py \
        --root "$DATA" \
        --trainer ZeroshotCLIP \
        --dataset-config-file "configs/datasets/$dataset.yaml" \
        --config-file "$cfg_file" \
        --output-dir "$dir" \
        --backbone "$backbone" \
        --eval-only \
        ${OTHER_OPTS[@]+"${OTHER_OPTS[@]}"} || true
}

# Report the failed runs and exit: 0 when all succeeded, 1 otherwise.
tr_finish() {
    tr_flush
    if ((${#TR_FAILED[@]})); then
        tr_log "${#TR_FAILED[@]} run(s) failed:"
        local f
        for f in "${TR_FAILED[@]}"; do
            tr_log "  $f"
        done
        exit 1
    fi
    ((DRY_RUN)) || tr_log "all runs done"
    exit 0
}
