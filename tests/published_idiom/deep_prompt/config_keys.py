"""The config lines MaPLe keeps in its train.py (``extend_cfg``), moved beside the trainer as the README says:
CoOp's group again (with this repo's defaults) and the method's own."""
from yacs.config import CfgNode as CN


def extend_cfg(cfg):
    cfg.TRAINER.COOP = CN()
    cfg.TRAINER.COOP.N_CTX = 16
    cfg.TRAINER.COOP.CSC = False
    cfg.TRAINER.COOP.CTX_INIT = ""
    cfg.TRAINER.COOP.PREC = "fp16"
    cfg.TRAINER.COOP.CLASS_TOKEN_POSITION = "end"

    cfg.TRAINER.DEEPPROMPT = CN()
    cfg.TRAINER.DEEPPROMPT.N_CTX = 2
    cfg.TRAINER.DEEPPROMPT.CTX_INIT = "a photo of a"
    cfg.TRAINER.DEEPPROMPT.PREC = "fp16"
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"
