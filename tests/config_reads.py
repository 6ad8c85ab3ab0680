"""Which config keys code reads: a config node that records every leaf key read from it.

    with recording_configs(monkeypatch) as reads:   # launch.setup_cfg now returns a RecordingCfg
        run_train(...)                              # every cfg.X.Y / cfg["Y"] / .get("Y") lands in reads

Reads made while the config is merged (yacs walking every key) are not recorded: only code that
uses the final config, as a trainer and the engine do, counts.
"""
import contextlib

from yacs.config import CfgNode as CN


class RecordingCfg(CN):
    """A CfgNode whose leaf reads (attribute, item or ``get``) are added to ``RecordingCfg.reads``."""

    reads = set()

    def __init__(self, init_dict=None, key_list=None, new_allowed=False):
        super().__init__(init_dict, key_list, new_allowed)
        self.__dict__["_prefix"] = "".join(f"{k}." for k in (key_list or []))

    def __getitem__(self, key):
        value = super().__getitem__(key)
        if not isinstance(value, CN):
            RecordingCfg.reads.add(self.__dict__.get("_prefix", "") + key)
        return value

    def get(self, key, default=None):
        return self[key] if key in self else default


def recording(cfg):
    """A frozen RecordingCfg copy of ``cfg``."""
    rec = RecordingCfg(cfg)
    rec.freeze()
    return rec


@contextlib.contextmanager
def recording_configs(monkeypatch):
    from engine import launch  # train.py's setup (train.main is launch.main)

    real = launch.setup_cfg
    monkeypatch.setattr(launch, "setup_cfg", lambda args: recording(real(args)))
    before = set(RecordingCfg.reads)
    RecordingCfg.reads.clear()
    try:
        yield RecordingCfg.reads
    finally:
        monkeypatch.setattr(launch, "setup_cfg", real)
        got = set(RecordingCfg.reads)
        RecordingCfg.reads.clear()
        RecordingCfg.reads.update(before | got)
