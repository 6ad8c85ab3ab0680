"""Engine utilities under Dassl's names (``from engine.utils import setup_logger, ...``)."""
from ..registry import Registry, check_availability  # noqa: F401
from .io import atomic_torch_save, atomic_write_text, mkdir_if_missing  # noqa: F401
from .logger import close_logger, setup_logger  # noqa: F401
from .meters import AverageMeter, MetricMeter  # noqa: F401
from .tools import (  # noqa: F401
    check_isfile,
    collect_env_info,
    count_num_param,
    listdir_nohidden,
    read_image,
    read_json,
    set_random_seed,
    tolist_if_not,
    write_json,
)

from .checkpoint import (  # noqa: F401,E402
    load_checkpoint,
    load_pretrained_weights,
    resume_from_checkpoint,
    save_checkpoint,
)
