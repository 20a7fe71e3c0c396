"""Samplers: the diffusers scheduler class behind each ``IPFVRConfig.sampler`` name.

Every sampler is built from the betas of the weights folder's ``scheduler/scheduler_config.json``,
so the sampler can change per call without touching the weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

SAMPLER_CLASSES: dict[str, tuple[type[SchedulerMixin], dict[str, Any]]] = {
    "ddim": (DDIMScheduler, {}),
    "dpmsolver++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_ancestral": (EulerAncestralDiscreteScheduler, {}),
    "unipc": (UniPCMultistepScheduler, {}),
}


def make_sampler(base: SchedulerMixin | Mapping[str, Any], sampler: str) -> SchedulerMixin:
    """A fresh scheduler of class ``sampler`` over the betas of ``base`` (a scheduler or its config)."""
    cls, extra = SAMPLER_CLASSES[sampler]
    base_config = base.config if isinstance(base, SchedulerMixin) else base
    return cls.from_config(base_config, **extra)
