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
yaml of its config folder at every shot count. The declaration belongs to the class itself: a
subclass that declares nothing does not inherit its parent's (it is another method).

Variant ``flags``, ``opts`` and ``folder`` may name ``{alpha}`` (the protocol's ``extra["alpha"]``
rule of the dataset) and ``{needs}`` (the file the producer named in ``needs`` writes).
"""
import os
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
    flags: Tuple[str, ...] = ()        # train.py flags of every call (before --backbone), e.g. --enhanced-base


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
    order: int = 1000                                # place in compare.sh's default list and the legend
    default_grid: bool = True                        # in compare.sh's default --methods (when declared)


def declared_protocol(cls):
    """The protocol ``cls`` declares in its own body, or None (a subclass is another method)."""
    value = vars(cls).get("protocol")
    return value if isinstance(value, Protocol) else None


def protocol_of(cls):
    """The protocol of a trainer class: its own declaration, else ``Protocol()``."""
    return declared_protocol(cls) or Protocol()


def label_of(cls, variant=None):
    """Row label of a trainer (and one of its variants) in tables and figures."""
    protocol = protocol_of(cls)
    if variant is not None and variant.label:
        return variant.label
    return protocol.label or cls.__name__


def backbone_tag(name):
    """Short backbone name used in folder names: RN50 -> rn50, ViT-B/16 -> vitb16, a weights file -> its stem."""
    base = os.path.splitext(os.path.basename(name))[0] if os.path.isfile(name) else name
    return base.lower().replace("/", "").replace("-", "").replace("@", "")


def family_of(backbone):
    """CoOp's config family of a backbone: its ViT-B/16 configs for ViT-B/16, the RN50 ones otherwise
    (the input pipeline is the same; --backbone sets the model either way)."""
    return "vit_b16" if backbone_tag(backbone) == "vitb16" else "rn50"


# ---- shared per-shot rules that several methods declare ---------------------------------------

# CoOp's per-shot schedule (COOP.md; CLIP-Adapter's repository runs CoOp's commands): 1 shot 50
# epochs, 2 and 4 shots 100, 8 and 16 shots 200; ImageNet 50 at every shot count. As config
# names: <family>_ep50, <family>_ep100, <family> (200).
COOP_EPOCHS = {1: 50, 2: 100, 4: 100, 8: 200, 16: 200}
COOP_IMAGENET_EPOCHS = 50


def coop_epochs(dataset, shots):
    """CoOp's epochs for a run (the shot counts between the published ones take the lower rule)."""
    if dataset == "imagenet" or shots <= 1:
        return COOP_IMAGENET_EPOCHS
    return 100 if shots <= 4 else 200


def coop_schedule(dataset, shots, family):
    """CoOp's config of (dataset, shots): rn50_ep50 / rn50_ep100 / rn50 (or vit_b16_...)."""
    return family + {50: "_ep50", 100: "_ep100", 200: ""}[coop_epochs(dataset, shots)]


def family_config(dataset, shots, family):
    """One config per backbone family at every shot count (linear probe, zero-shot)."""
    return family


def _matches(template, value, alpha=None):
    if template == "{needs}":
        return str(value).lower() != "none"
    if template == "{alpha}":
        return alpha is None or _same_number(value, alpha)
    return str(template) == str(value)


def _same_number(a, b):
    try:
        return abs(float(a) - float(b)) < 1e-9
    except (TypeError, ValueError):
        return str(a) == str(b)


def run_variant(protocol, opts, flags, dataset=""):
    """The variant of ``protocol`` a run is (its opts ``KEY VALUE ...`` and train.py ``flags``
    {"--enhanced-base": value} hold every opt and flag of the variant), and whether it used the
    variant's published values (``{alpha}`` as the protocol's ``extra["alpha"]`` rule gives it).
    Returns (variant or None, published)."""
    pairs = dict(zip(opts[::2], opts[1::2]))
    rule = protocol.extra.get("alpha")
    alpha = rule(dataset) if rule and dataset else None
    best, published = None, False
    for variant in protocol.variants:
        wanted = list(zip(variant.opts[::2], variant.opts[1::2]))
        given = list(zip(variant.flags[::2], variant.flags[1::2]))
        if not all(key in pairs and _matches(value, pairs[key]) for key, value in wanted):
            continue
        if not all(_matches(value, flags.get(flag, "none")) for flag, value in given):
            continue
        if best is None or len(wanted) + len(given) > len(best.opts) // 2 + len(best.flags) // 2:
            best = variant
            published = all(_matches(value, pairs[key], alpha) for key, value in wanted)
    return best, published


def config_rule_stem(protocol, dataset, shots, family):
    """The config stem the protocol publishes for (dataset, shots, family), or None without a rule."""
    rule = protocol.config
    if callable(rule):
        try:
            return rule(dataset, shots, family)
        except (KeyError, ValueError):
            return None
    return rule or None
