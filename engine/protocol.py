"""What a method declares about its experiments, beside its trainer: the protocol as data.

The comparison planner (``scripts/plan.py``), the summary and the figure read only this, so a
method in one file (with its ``configs/<Trainer>/*.yaml`` beside it) takes part in the whole
product. A trainer class declares it as a class attribute::

    @TRAINER_REGISTRY.register()
    class KgCoOp(CoOp):
        protocol = Protocol(
            label="KgCoOp",                                  # its name in tables and figures
            config=coop_schedule,                            # (dataset, shots, family) -> yaml stem
            variants=(Variant("", opts=("TRAINER.COOP.N_CTX", "4"), folder="_nctx4"),),
            evaluations=("dg", "base2new"),                  # after training
        )

A trainer that declares nothing gets ``Protocol()``: its label is its name and it runs the only
yaml of its config folder at every shot count.
"""
from dataclasses import dataclass, field
from typing import Callable, Optional, Tuple, Union

# (dataset config stem, shots, backbone family "rn50" | "vit_b16") -> trainer config stem
ConfigRule = Callable[[str, int, str], str]


@dataclass(frozen=True)
class Variant:
    """One setting of a method that the comparison runs, with its own folder-name part."""

    name: str = ""                     # "" = the method itself; else "<Trainer>-<name>" on the CLI
    opts: Tuple[str, ...] = ()         # KEY VALUE ... added to every train.py call of the variant
    folder: str = ""                   # folder-name part that records those opts, e.g. "_nctx16_cscFalse_ctpend"
    label: str = ""                    # row label in tables/figures ("" = the protocol's label)
    needs: Tuple[str, ...] = ()        # methods whose runs must finish first (e.g. "StrongBase")


@dataclass(frozen=True)
class Protocol:
    """How the comparison runs a method; every field has the default a plain method needs."""

    label: str = ""                                  # name as in the papers ("" = the trainer name)
    config: Union[None, str, ConfigRule] = None      # yaml stem or rule; None = the folder's only yaml
    config_dir: str = ""                             # configs/trainers/<config_dir> ("" = trainer name)
    variants: Tuple[Variant, ...] = (Variant(),)
    trains: bool = True                              # False: zero-shot style, one run per dataset, no shots/seeds
    evaluations: Tuple[str, ...] = ()                # protocols after training: "dg", "base2new"
    end_to_end: bool = False                         # changes the image tower: no feature cache
    extra: dict = field(default_factory=dict)        # anything else a planner rule of the method needs
    source: Optional[str] = None                     # where the published settings come from (paper/repo)
