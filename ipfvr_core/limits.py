"""The size limits a job's media must respect before any work is done on them."""

from __future__ import annotations

from dataclasses import dataclass

from ipfvr_core.errors import ConfigError


@dataclass(frozen=True)
class VideoLimits:
    """Upper bounds a video must respect before any work is done on it."""

    max_width: int = 3840  # display width in pixels (after rotation)
    max_height: int = 3840  # display height in pixels (after rotation)
    max_pixels: int = 3840 * 2160  # width * height of one frame
    max_duration_s: float = 600.0  # container or stream duration in seconds
    max_frames: int = 36_000  # frame count (exact or estimated)

    def __post_init__(self) -> None:
        for name in ("max_width", "max_height", "max_pixels", "max_duration_s", "max_frames"):
            if not getattr(self, name) > 0:
                raise ConfigError(
                    f"VideoLimits.{name} must be positive, got {getattr(self, name)!r}",
                    field=name,
                    code="config_invalid",
                )
