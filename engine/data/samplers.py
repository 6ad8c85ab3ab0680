"""Dassl's ``dassl.data.samplers`` module path: ``build_sampler`` lives in the data manager."""
from .data_manager import SAMPLERS, build_sampler  # noqa: F401
