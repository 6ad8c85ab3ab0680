# Shared functions of the MVLPT workflows (main_{mt,single}_coopdata_cut.sh, main_{mt,single}_elevater_cut.sh).
# Source it after scripts/taskres/common.sh; it defines functions and globals and runs nothing.
#
# Folders (shared with scripts/summarize.py, section "MVLPT"):
#   source: <OUTPUT>/<Dataset,Dataset,...>/MVLPT/<KIND>/<cfg>_<K>shots/nctx<N>_cscFalse_ctpmiddle/seed<S>
#           (the original's <output>/<DATASET>/<TRAINER>/<CFG>_<SHOTS>shots/nctx<N>_csc_ctp/seed<S>, with
#           MVLPT/ in between so these never meet the CoOp trainer's own runs; its seed-averaged prompt,
#           scripts/mvlpt/avg_ckpt.py, lands in the folder above the seeds, as the original's does)
#   target: <OUTPUT>/<Dataset>/MVLPT/<KIND>/<cfg>_<K>shots/nctx<N>_cscFalse_ctpmiddle_init-<src>/seed<S>
#           <src> = "scratch" or "src" + 8 hex digits of the source folder's path, so targets started
#           from different sources never share a folder; the run's log.txt names the source folder.
# KIND is MVLPT's TRAINER argument: CoOp (MCoOp), VPT (MVPT) or UPT (MUPT); the ELEVATER scripts
# also take COCOOP (CoCoOp's image-conditioned context), as the original's do.
# ELEVATER (tasks named as ELEVATER names them, read by the Elevater dataset, no --dataset-coop):
#   source: <OUTPUT>/ELEVATER[-<8 hex of the task list>]/MVLPT/<KIND>/<cfg>_<K>shots/nctx<N>_cscFalse_ctpmiddle/seed<S>
#           (no suffix for the default task list; 19 names do not fit in one folder name)
#   target: <OUTPUT>/<elevater name>/MVLPT/<KIND>/..._init-<src>/seed<S>, as the CoOp targets

# The 11 source datasets in the order of the original main_mt_coopdata_cut.sh (the order sets the
# label offsets of the tasks, so it is part of a source run's identity).
MV_SOURCES="imagenet caltech101 food101 stanford_cars oxford_pets oxford_flowers fgvc_aircraft sun397 dtd eurosat ucf101"

# "imagenet dtd" -> "ImageNet,DescribableTextures" (MVLPT's --dataset with --dataset-coop).
mv_class_list() {
    local out="" name
    for name in $1; do
        out+="${out:+,}$(tr_dataset_class "$name")"
    done
    echo "$out"
}

# ELEVATER's 20 classification datasets in the order of the original main_mt_elevater_cut.sh.
MV_ELEVATER_ALL="hateful-memes cifar-10 mnist oxford-flower-102 oxford-iiit-pets resisc45_clip country211 food-101 stanford-cars caltech-101 dtd voc-2007-classification cifar-100 fgvc-aircraft-2013b-variants102 patch-camelyon rendered-sst2 gtsrb eurosat_clip fer-2013 kitti-distance"
# Its default source list less voc-2007-classification: multi-label, which the trainers here do not train.
MV_ELEVATER_SOURCES="${MV_ELEVATER_ALL/ voc-2007-classification/}"

mv_check_kind() {  # KIND [COCOOP]: the kinds a script takes (the ELEVATER ones also take COCOOP)
    case "$1" in
        CoOp | VPT | UPT) ;;
        COCOOP) [[ "${2:-}" == COCOOP ]] || tr_die "TRAINER 'COCOOP' is only taken by the ELEVATER scripts (main_*_elevater_cut.sh), as in the original" ;;
        *) tr_die "TRAINER '$1' is not one of CoOp, VPT, UPT${2:+, $2} (MCoOp, MVPT, MUPT${2:+, CoCoOp})" ;;
    esac
}

mv_check_elevater() {  # what, names: each an ELEVATER dataset the Elevater class reads
    local name
    for name in $2; do
        [[ "$name" == voc-2007-classification ]] &&
            tr_die "$1 '$name' is multi-label (scored by 11-point mAP), which the trainers here do not train; leave it out"
        [[ " $MV_ELEVATER_ALL " == *" $name "* ]] || tr_die "$1 '$name' is not an ELEVATER dataset (one of: $MV_ELEVATER_SOURCES)"
    done
}

mv_elevater_folder() {  # the source folder's first part for a task list
    if [[ "$1" == "$MV_ELEVATER_SOURCES" ]]; then
        echo ELEVATER
    else
        echo "ELEVATER-$(printf '%s' "${1// /,}" | sha1sum | cut -c1-8)"
    fi
}

mv_setting() {  # the original's nctx<N>_csc<CSC>_ctp<CTP> with the values its scripts pass
    echo "nctx${1}_cscFalse_ctpmiddle"
}

# The config opts of a prompt kind, as the original scripts pass them, into the array MV_OPTS.
mv_kind_opts() {
    local kind=$1 nctx=$2
    # best_val as the original selects; ImageNet's val split is its test split (as in CoOp), so the
    # selection sees test images: allowed on purpose, and each run's log.txt warns about it
    MV_OPTS=(TRAINER.MVLPT.COOP.CLASS_TOKEN_POSITION middle TRAINER.MVLPT.COOP.CSC False
             TEST.NO_TEST False TEST.FINAL_MODEL best_val TEST.ALLOW_VAL_IS_TEST True)
    case "$kind" in
        COCOOP) MV_OPTS=(TRAINER.MVLPT.COCOOP.N_CTX "$nctx" TEST.NO_TEST False TEST.FINAL_MODEL best_val) ;;
        UPT) MV_OPTS+=(TRAINER.MVLPT.VPT.N_CTX "$nctx" TRAINER.MVLPT.COOP.N_CTX "$nctx" TRAINER.CUT_CONTEXTLEN True) ;;
        VPT) MV_OPTS+=(TRAINER.MVLPT.VPT.N_CTX "$nctx" TRAINER.MVLPT.COOP.N_CTX 0) ;;
        CoOp) MV_OPTS+=(TRAINER.MVLPT.VPT.N_CTX 0 TRAINER.MVLPT.COOP.N_CTX "$nctx" TRAINER.CUT_CONTEXTLEN True) ;;
    esac
}

# Positional checks shared by both scripts: TRAINER CFG NCTX SHOTS.
mv_check_common() {
    mv_check_kind "$1" "${MV_EXTRA_KIND:-}"
    [[ -f "configs/trainers/MVLPT/$2.yaml" ]] ||
        tr_die "CFG '$2' is not a file in configs/trainers/MVLPT/ (e.g. vit_b16)"
    [[ "$3" =~ ^[1-9][0-9]*$ ]] || tr_die "NCTX '$3' is not a positive whole number"
    [[ "$4" =~ ^[1-9][0-9]*$ ]] || tr_die "SHOTS '$4' is not a positive whole number"
    local i
    for ((i = 0; i < ${#EXTRA_OPTS[@]}; i += 2)); do
        case "${EXTRA_OPTS[i]}" in
            TRAINER.MVLPT.VPT.N_CTX | TRAINER.MVLPT.COOP.N_CTX | TRAINER.MVLPT.COCOOP.N_CTX)
                tr_die "pass NCTX instead of ${EXTRA_OPTS[i]} after --, so the output folder names it" ;;
        esac
    done
}

# --backbone only when the user gave it (BACKBONE_ARG, set by tr_parse_args; the config names the
# backbone otherwise); then its tag joins the folder's cfg part so runs of two backbones never share a folder.
mv_backbone_args() {
    MV_BACKBONE=()
    MV_TAG=""
    if [[ -n "${BACKBONE_ARG:-}" ]]; then
        MV_BACKBONE=(--backbone "$BACKBONE_ARG")
        MV_TAG="_$(tr_backbone_tag "$BACKBONE_ARG")"
    fi
}
