"""`FitOnceTrainer`: frozen-CLIP methods fitted in one pass instead of an epoch loop
(linear probe, training-free Tip-Adapter).

    train(): resume (a saved fit is loaded, not refitted) or fit() + save -> test()

The fit is saved as epoch 1 (``<model>/model.pth.tar-1`` and its ``checkpoint`` pointer), so a
re-run of a finished command only evaluates and ``--eval-only --model-dir DIR --load-epoch 1``
works as for trained methods. An interrupted fit leaves no checkpoint: the re-run fits again
from the cached features, deterministically, to the same result.
"""
import datetime
import logging
import time

from .clip_trainer import FrozenCLIPTrainer

logger = logging.getLogger(__name__)


class FitOnceTrainer(FrozenCLIPTrainer):
    """Subclasses implement ``fit()`` (set their registered model's state) and ``model_inference``."""

    epoch_loop = False  # one fit, no epochs: OPTIM.MAX_EPOCH is not checked as a training length

    def fit(self):
        raise NotImplementedError

    def train(self):
        start = time.time()
        if not self.resume_model_if_exist(self.cfg.RESUME or self.output_dir):
            self.fit()
            self.save_model(0, self.output_dir)
        logger.info("Finish training")
        if not self.cfg.TEST.NO_TEST:
            self.test()
        logger.info("Elapsed: %s", datetime.timedelta(seconds=round(time.time() - start)))

    def set_model_mode(self, mode="train", names=None):
        super().set_model_mode("eval", names)  # nothing here trains by gradient
        self.clip_model.eval()
