"""Restoration engines: aligned face clips plus identity conditioning in, restored clips out.

``load_engine(name, ...)`` is the one place that maps an engine name to its implementation;
implementations are imported lazily so that loading one does not import the other's stack.
"""

from __future__ import annotations

from pathlib import Path

from ipfvr_core.engines.base import Engine
from ipfvr_core.errors import ConfigError

ENGINES = ("reference", "baseline", "ipfvr")  # the first is the default
DEFAULT_ENGINE = ENGINES[0]


def load_engine(
    name: str,
    *,
    weights: str | Path | None = None,
    device: str = "cpu",
    dtype: str | None = None,
) -> Engine:
    """Load engine ``name``. ``weights`` is required for ``ipfvr`` (a local folder, see README)."""
    if name == "reference":
        from ipfvr_core.engines.reference import ReferenceEngine

        return ReferenceEngine(device=device, dtype=dtype)
    if name == "baseline":
        from ipfvr_core.engines.baseline import BaselineEngine

        return BaselineEngine(device=device, dtype=dtype)
    if name == "ipfvr":
        if weights is None:
            raise ConfigError("the ipfvr engine needs a weights folder", field="weights", code="weights_invalid")
        from ipfvr_core.engines.ipfvr import IPFVREngine

        return IPFVREngine.from_pretrained(weights, device=device, dtype=dtype)
    raise ConfigError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}", field="engine")
