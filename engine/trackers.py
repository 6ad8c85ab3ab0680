"""Experiment trackers beside tensorboard, each optional and behind a config key:

    TRACKING.MLFLOW True      MLflow, on a local file store by default (TRACKING.MLFLOW_URI, empty:
                              file:<OUTPUT_DIR>/../mlruns; ``mlflow ui --backend-store-uri <that>``
                              shows the runs): params from the config, every scalar the trainer
                              writes to tensorboard as a metric, run.json as an artifact
    TRACKING.WANDB True       Weights & Biases in offline mode (TRACKING.WANDB_MODE), files under
                              TRACKING.WANDB_DIR (empty: OUTPUT_DIR); ``wandb sync`` uploads them

The packages are optional (requirements-trackers.txt): nothing imports them unless its key is set,
and a key set without its package installed is one sentence naming the pip line.
"""
import logging
import os

from .errors import ConfigError

logger = logging.getLogger(__name__)


def flat_config(cfg, prefix=""):
    """{"OPTIM.LR": "0.002", ...}: the config's leaves as strings."""
    out = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if hasattr(value, "items"):
            out.update(flat_config(value, name + "."))
        else:
            out[name] = str(value)
    return out


def _need(module, key):
    try:
        return __import__(module)
    except ImportError as e:
        raise ConfigError(f"{key} True needs the {module} package: pip install -r requirements-trackers.txt "
                          f"(or set {key} False).") from e


class MlflowTracker:
    def __init__(self, cfg):
        mlflow = _need("mlflow", "TRACKING.MLFLOW")
        t = cfg.TRACKING
        uri = t.MLFLOW_URI or "file:" + os.path.join(os.path.dirname(os.path.abspath(cfg.OUTPUT_DIR)), "mlruns")
        if uri.startswith("file:"):  # MLflow 3 keeps its file store behind this switch (a local store, no server)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.mlflow = mlflow
        self.client = mlflow.tracking.MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(t.MLFLOW_EXPERIMENT)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(t.MLFLOW_EXPERIMENT)
        self.run_id = self.client.create_run(experiment_id, run_name=os.path.abspath(cfg.OUTPUT_DIR), tags={
            "trainer": cfg.TRAINER.NAME, "dataset": cfg.DATASET.NAME, "output_dir": os.path.abspath(cfg.OUTPUT_DIR),
        }).info.run_id
        params = [mlflow.entities.Param(k, v[:6000]) for k, v in sorted(flat_config(cfg).items())]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        logger.info("MLflow run %s in %s", self.run_id, uri)

    def log_metric(self, tag, value, step):
        self.client.log_metric(self.run_id, tag, float(value), step=int(step or 0))

    def finish(self, run_json, status):
        if run_json and os.path.isfile(run_json):
            self.client.log_artifact(self.run_id, run_json)
        self.client.set_terminated(self.run_id, status="FINISHED" if status == "finished" else
                                   "KILLED" if status == "interrupted" else "FAILED")


class WandbTracker:
    def __init__(self, cfg):
        wandb = _need("wandb", "TRACKING.WANDB")
        t = cfg.TRACKING
        folder = t.WANDB_DIR or cfg.OUTPUT_DIR
        os.makedirs(folder, exist_ok=True)
        self.run = wandb.init(project=t.WANDB_PROJECT, dir=folder, mode=t.WANDB_MODE, config=flat_config(cfg),
                              name=os.path.basename(os.path.abspath(cfg.OUTPUT_DIR)), reinit="finish_previous")
        logger.info("W&B run %s (%s) in %s", self.run.id, t.WANDB_MODE, folder)

    def log_metric(self, tag, value, step):
        self.run.log({tag: float(value), "step": int(step or 0)})

    def finish(self, run_json, status):
        if run_json and os.path.isfile(run_json):
            self.run.save(run_json, base_path=os.path.dirname(run_json), policy="now")
        self.run.finish(exit_code=0 if status == "finished" else 1)
        # finish() returns before W&B's service process has written the offline log (`wandb sync` reads it):
        # a busy machine caught the file holding only its header; teardown waits for the service to flush
        import wandb

        wandb.teardown()


class Trackers:
    """The trackers a config turns on; ``log_metric`` goes to each."""

    def __init__(self, cfg):
        self.items = []
        if cfg.TRACKING.MLFLOW:
            self.items.append(MlflowTracker(cfg))
        if cfg.TRACKING.WANDB:
            self.items.append(WandbTracker(cfg))

    def __bool__(self):
        return bool(self.items)

    def log_metric(self, tag, value, step=None):
        for tracker in self.items:
            tracker.log_metric(tag, value, step)

    def finish(self, run_json, status):
        for tracker in self.items:
            try:
                tracker.finish(run_json, status)
            except Exception as e:  # noqa: BLE001 - a tracker's failure must not hide the run's own end
                logger.warning("Could not close the %s run: %s", type(tracker).__name__, e)
