"""Temporal smoothing of a track's 5-point landmarks before alignment.

Per-frame landmarks jitter by a pixel or two; aligned through a similarity transform, that jitter
becomes a crop that shakes, and after restoration and paste-back the face flickers against a
still background. Two filters are provided:

* :func:`gaussian_smooth` (offline, **what the pipeline uses**; sigma = 5 frames as in KEEP). The
  whole track's landmarks are known before any crop is restored, so a symmetric (non-causal)
  Gaussian can be used: it has zero lag, and its strong smoothing costs nothing in latency. At
  track starts/ends and around gaps the kernel is truncated to the samples that exist and
  renormalised (never padded), and by default a Gaussian-weighted line rather than a weighted
  mean is fitted, so a face that is moving when its track starts or ends is not pulled back
  (see ``edge``). Weights use the real frame distance, so a track with missing frames is
  smoothed in time, not in sample index.
  During fast motion the smoothed landmarks trail the true face slightly; that does not misplace
  the face in the output, because crop and paste-back use the same smoothed transform (the
  region taken is the region put back), it only makes the crop a little less centred.
* :class:`OneEuroFilter` (online, Casiez et al. CHI 2012) for streaming use where future frames are
  not available: a low-pass whose cutoff rises with speed, trading jitter at rest against lag
  in motion. It always lags somewhat during motion, which is why the offline path does not use it.

:func:`smooth_landmarks` applies the filter chosen in :class:`SmoothingConfig` to a track.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ipfvr_core.errors import InputError

SmoothingMethod = Literal["gaussian", "one_euro", "none"]
EdgeMode = Literal["linear", "renormalize"]


@dataclass(frozen=True)
class SmoothingConfig:
    """How a track's landmarks are smoothed over time."""

    method: SmoothingMethod = "gaussian"  # offline zero-lag Gaussian (default), online one-euro, or none
    sigma: float = 5.0  # Gaussian sigma in frames (KEEP uses 5)
    truncate: float = 3.0  # Gaussian kernel half-width in sigmas
    edge: EdgeMode = "linear"  # Gaussian estimate: local-linear (no lag at track ends) or renormalised mean
    min_cutoff: float = 1.0  # one-euro: cutoff (Hz) at rest; lower = less jitter, more lag
    beta: float = 2.0  # one-euro: cutoff (Hz) added per unit speed, speed in inter-ocular distances per second
    d_cutoff: float = 1.0  # one-euro: cutoff (Hz) of the speed estimate
    fps: float = 25.0  # one-euro: frame rate that converts frame indices to seconds

    def __post_init__(self) -> None:
        if self.method not in ("gaussian", "one_euro", "none"):
            raise InputError(
                f"smoothing method must be gaussian, one_euro or none, got {self.method!r}",
                field="method",
                code="invalid_option",
            )
        if self.edge not in ("linear", "renormalize"):
            raise InputError(
                f"edge must be linear or renormalize, got {self.edge!r}", field="edge", code="invalid_option"
            )
        for name in ("sigma", "truncate", "min_cutoff", "d_cutoff", "fps"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise InputError(f"{name} must be a positive number, got {value!r}", field=name, code="invalid_option")
        if not math.isfinite(self.beta) or self.beta < 0:
            raise InputError(f"beta must be >= 0, got {self.beta!r}", field="beta", code="invalid_option")


def _frames_or_range(frames: np.ndarray | None, n: int) -> np.ndarray:
    if frames is None:
        return np.arange(n, dtype=np.float64)
    f = np.asarray(frames, dtype=np.float64)
    if f.shape != (n,):
        raise InputError(f"frames must have shape ({n},), got {f.shape}", field="frames", code="invalid_option")
    if n > 1 and not np.all(np.diff(f) > 0):
        raise InputError("frames must be strictly increasing", field="frames", code="invalid_option")
    return f


def gaussian_smooth(
    points: np.ndarray,
    sigma: float,
    *,
    frames: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    truncate: float = 3.0,
    edge: EdgeMode = "linear",
) -> np.ndarray:
    """Zero-lag Gaussian smoothing over time of ``points`` (T, ...) -> same shape, float64.

    ``frames`` (T,) are the samples' strictly increasing frame indices (default ``0..T-1``); the
    kernel weight of sample s for output t is ``exp(-(frames[s] - frames[t])^2 / (2 sigma^2))``
    for ``|frames[s] - frames[t]| <= truncate * sigma``, times ``weights[s]`` (T,) when given
    (e.g. lower confidence for interpolated entries). Only samples that exist contribute.

    ``edge`` picks the estimate from those weighted neighbours:

    * ``"renormalize"``: the weighted mean (the truncated kernel renormalised to sum to 1). Near
      a track's start or end the kernel is one-sided, so a moving face is pulled back towards
      the interior by about ``0.8 * sigma * speed``.
    * ``"linear"`` (default): the value at ``t`` of the weighted least-squares line through the
      neighbours (a local-linear kernel smoother). Where the neighbours are symmetric (the
      interior of a regularly sampled track) this is exactly the Gaussian mean; at edges and
      gaps it removes the one-sided bias for moving faces, at the price of somewhat more
      residual jitter in the first and last ~sigma frames.

    A constant trajectory is returned unchanged under both, and a linear one too under ``"linear"``.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim < 1 or pts.shape[0] == 0:
        raise InputError(
            f"points must be a non-empty (T, ...) array, got shape {pts.shape}", field="points", code="invalid_option"
        )
    if not math.isfinite(sigma) or sigma <= 0:
        raise InputError(f"sigma must be positive, got {sigma!r}", field="sigma", code="invalid_option")
    if not math.isfinite(truncate) or truncate <= 0:
        raise InputError(f"truncate must be positive, got {truncate!r}", field="truncate", code="invalid_option")
    if edge not in ("linear", "renormalize"):
        raise InputError(f"edge must be linear or renormalize, got {edge!r}", field="edge", code="invalid_option")
    n = pts.shape[0]
    f = _frames_or_range(frames, n)
    w_in = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if w_in.shape != (n,) or not np.all(np.isfinite(w_in)) or np.any(w_in < 0) or not np.any(w_in > 0):
        raise InputError("weights must be (T,) finite, >= 0, not all zero", field="weights", code="invalid_option")
    flat = pts.reshape(n, -1)  # (T, D)
    radius_frames = truncate * sigma
    min_step = float(np.min(np.diff(f))) if n > 1 else 1.0
    radius_idx = min(
        n - 1, math.floor(radius_frames / min_step)
    )  # samples within the frame radius are at most this many indices away
    s0, s1, s2 = np.zeros(n), np.zeros(n), np.zeros(n)  # (T,) each: sum of w, w*dt, w*dt^2
    m0, m1 = np.zeros_like(flat), np.zeros_like(flat)  # (T, D) each: sum of w*x, w*dt*x
    for d in range(-radius_idx, radius_idx + 1):
        lo, hi = max(0, -d), min(n, n - d)  # outputs t whose neighbour t + d exists
        dt = (f[lo + d : hi + d] - f[lo:hi]) / sigma  # (hi - lo,) in sigmas, for conditioning
        k = np.where(np.abs(dt) <= truncate, np.exp(-0.5 * dt**2), 0.0) * w_in[lo + d : hi + d]  # (hi - lo,)
        x = flat[lo + d : hi + d]  # (hi - lo, D)
        s0[lo:hi] += k
        s1[lo:hi] += k * dt
        s2[lo:hi] += k * dt**2
        m0[lo:hi] += k[:, None] * x
        m1[lo:hi] += (k * dt)[:, None] * x
    has = s0 > 0
    mean = np.where(has[:, None], m0 / np.where(has, s0, 1.0)[:, None], flat)  # no weighted neighbour: keep the input
    if edge == "renormalize":
        return mean.reshape(pts.shape)  # (T, ...)
    det = s0 * s2 - s1**2  # (T,)
    # A line needs neighbours spread in time; with (almost) none, fall back to the mean.
    ok = has & (det > 1e-9 * np.maximum(s0 * s2, 1e-300))
    safe = np.where(ok, det, 1.0)
    line = (s2[:, None] * m0 - s1[:, None] * m1) / safe[:, None]  # (T, D): intercept at dt = 0
    return np.where(ok[:, None], line, mean).reshape(pts.shape)  # (T, ...)


class OneEuroFilter:
    """Online one-euro filter over arrays of a fixed shape (e.g. (5, 2) landmarks).

    ``filter(x, t)`` takes the sample at time ``t`` seconds (strictly increasing) and returns the
    filtered value. The cutoff per element is ``min_cutoff + beta * |dx/dt|`` (the derivative is
    itself low-passed at ``d_cutoff``), so slow drift is smoothed hard and fast motion passes with
    little lag. Units of ``beta`` are those of 1 / (x units per second).
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0) -> None:
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise InputError(
                "one-euro needs min_cutoff > 0, d_cutoff > 0, beta >= 0", field="min_cutoff", code="invalid_option"
            )
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray:
        tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, dtype=np.float64))
        return 1.0 / (1.0 + tau / dt)

    def reset(self) -> None:
        """Forget the state; the next sample is passed through."""
        self._x = self._dx = None
        self._t = None

    def filter(self, x: np.ndarray, t: float) -> np.ndarray:
        """Filtered value (float64, shape of ``x``) of the sample ``x`` taken at time ``t`` seconds."""
        value = np.asarray(x, dtype=np.float64)
        if self._x is None or self._t is None or self._dx is None:
            self._x, self._dx, self._t = value.copy(), np.zeros_like(value), float(t)
            return value.copy()
        if value.shape != self._x.shape:
            raise InputError(
                f"sample shape {value.shape} differs from the filter's {self._x.shape}",
                field="x",
                code="invalid_option",
            )
        dt = float(t) - self._t
        if dt <= 0:
            raise InputError(f"time must increase, got {t} after {self._t}", field="t", code="invalid_option")
        dx = (value - self._x) / dt
        a_d = self._alpha(self.d_cutoff, dt)
        self._dx = self._dx + a_d * (dx - self._dx)
        a = self._alpha(self.min_cutoff + self.beta * np.abs(self._dx), dt)
        self._x = self._x + a * (value - self._x)
        self._t = float(t)
        return self._x.copy()


def one_euro_smooth(
    points: np.ndarray,
    *,
    frames: np.ndarray | None = None,
    fps: float = 25.0,
    min_cutoff: float = 1.0,
    beta: float = 0.0,
    d_cutoff: float = 1.0,
) -> np.ndarray:
    """Run :class:`OneEuroFilter` causally over ``points`` (T, ...) at ``frames / fps`` seconds; float64, same shape."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim < 1 or pts.shape[0] == 0:
        raise InputError(
            f"points must be a non-empty (T, ...) array, got shape {pts.shape}", field="points", code="invalid_option"
        )
    f = _frames_or_range(frames, pts.shape[0])
    filt = OneEuroFilter(min_cutoff=min_cutoff, beta=beta, d_cutoff=d_cutoff)
    return np.stack([filt.filter(p, ti / fps) for p, ti in zip(pts, f, strict=True)])  # (T, ...)


def smooth_landmarks(
    kps: np.ndarray,
    config: SmoothingConfig,
    *,
    frames: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Smooth a track's landmarks ``kps`` (T, 5, 2) with the filter in ``config``; float64 (T, 5, 2).

    For the one-euro filter the landmarks are expressed in units of the track's median
    inter-ocular distance before filtering, so ``beta`` does not depend on the face's size.
    ``weights`` only affects the Gaussian.
    """
    pts = np.asarray(kps, dtype=np.float64)
    if pts.ndim != 3 or pts.shape[1:] != (5, 2) or pts.shape[0] == 0:
        raise InputError(f"kps must be (T, 5, 2) with T >= 1, got {pts.shape}", field="kps", code="invalid_option")
    if config.method == "none":
        return pts.copy()
    if config.method == "gaussian":
        return gaussian_smooth(
            pts, config.sigma, frames=frames, weights=weights, truncate=config.truncate, edge=config.edge
        )
    eye_dist = float(np.median(np.linalg.norm(pts[:, 1] - pts[:, 0], axis=-1)))
    unit = max(eye_dist, 1e-6)
    origin = pts[0].mean(axis=0)  # (2,)
    normed = (pts - origin) / unit  # (T, 5, 2)
    smoothed = one_euro_smooth(
        normed, frames=frames, fps=config.fps, min_cutoff=config.min_cutoff, beta=config.beta, d_cutoff=config.d_cutoff
    )
    out: np.ndarray = smoothed * unit + origin  # (T, 5, 2)
    return out
