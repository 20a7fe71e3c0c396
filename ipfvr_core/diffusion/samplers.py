"""Samplers: the diffusers scheduler class behind each ``IPFVRConfig.sampler`` name.

Every sampler (and the training noise scheduler) is built from the weights folder's
``scheduler/scheduler_config.json`` with two things fixed here, so that sampling and training
agree whatever the folder says:

* the beta schedule is ``IPFVRConfig.beta_schedule`` (AnimateDiff samples and trains with
  ``"linear"``, while a public SD-1.5 scheduler folder says ``"scaled_linear"``); the folder's
  ``beta_start``, ``beta_end`` and ``num_train_timesteps`` are kept;
* ``clip_sample=False`` wherever the class takes it (AnimateDiff's setting; latents are not in [-1, 1]).

The sampler can therefore change per call without touching the weights.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any, cast

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
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


def build_scheduler(
    cls: type[SchedulerMixin], base: SchedulerMixin | Mapping[str, Any], *, beta_schedule: str, **extra: Any
) -> SchedulerMixin:
    """A fresh ``cls`` over ``base``'s (a scheduler or its config) betas, with ``beta_schedule`` and no clipping.

    ``base``'s ``beta_start``/``beta_end``/``num_train_timesteps`` are kept; its ``beta_schedule`` and
    ``trained_betas`` are replaced by ``beta_schedule``; ``clip_sample=False`` where ``cls`` takes it.
    """
    base_config = base.config if isinstance(base, SchedulerMixin) else base
    accepted = set(inspect.signature(cls.__init__).parameters)
    overrides: dict[str, Any] = {"beta_schedule": beta_schedule, "trained_betas": None, "clip_sample": False, **extra}
    return cls.from_config(base_config, **{k: v for k, v in overrides.items() if k in accepted})


def make_sampler(
    base: SchedulerMixin | Mapping[str, Any],
    sampler: str,
    *,
    beta_schedule: str,
    blended_steps: Sequence[int] = (),
) -> SchedulerMixin:
    """A fresh scheduler of class ``sampler`` over the betas of ``base`` (see :func:`build_scheduler`).

    ``blended_steps``: indices (into the scheduler's timesteps) of the steps whose result is blended
    with the previous clip's latents. UniPC's corrector would rebuild the next step's input from its
    own stored pre-blend sample, so the blend would reach the next step only through the model
    output; the corrector is disabled right after those steps (``disable_corrector``) and the
    blended latents are what the predictor continues from. Other samplers ignore it.
    """
    cls, extra = SAMPLER_CLASSES[sampler]
    if cls is UniPCMultistepScheduler:
        extra = {**extra, "disable_corrector": sorted(set(blended_steps))}
    return build_scheduler(cls, base, beta_schedule=beta_schedule, **extra)


def training_noise_scheduler(base: SchedulerMixin | Mapping[str, Any], *, beta_schedule: str) -> DDPMScheduler:
    """The DDPM noise scheduler of the diffusion loss: the same betas as :func:`make_sampler`'s samplers."""
    return cast(DDPMScheduler, build_scheduler(DDPMScheduler, base, beta_schedule=beta_schedule))
