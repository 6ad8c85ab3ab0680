"""The one entry point: parse args -> build cfg -> build trainer -> train or evaluate.

Same CLI as the Dassl-based repositories' train.py (plus ``--trainer-dir``); flags may also follow the ``KEY VALUE``
opts. Config merge order: defaults (engine + every trainer module's ``extend_cfg``) ->
--dataset-config-file -> --config-file -> CLI flags given -> ``KEY VALUE`` opts. No trainer is
named here: trainers come from ``trainers/`` and the trainer folders.
Bad input ends in one sentence on stderr and exit code 2; nothing already written is touched.
"""
import logging
import sys

from engine.errors import UserError
from engine.launch import (  # noqa: F401 - train.py's functions, as tests and scripts import them
    build_parser, check_eval_only, log_args, main, one_sentence, parse_args, reset_cfg, reset_multitask_cfg,
    save_config, set_enhanced_base, set_flags, setup, setup_cfg)


def cli():
    try:
        main()
    except UserError as e:
        message = one_sentence(e)
        print(f"error: {message}", file=sys.stderr)
        record = logging.LogRecord("train", logging.ERROR, __file__, 0, "%s", (message,), None)  # "ERROR: ..."
        for handler in logging.getLogger().handlers:  # keep the sentence in log.txt too
            if isinstance(handler, logging.FileHandler):
                handler.emit(record)
        sys.exit(2)
    except KeyboardInterrupt:
        print("Interrupted: run the same command again to resume from the last checkpoint.", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    cli()
