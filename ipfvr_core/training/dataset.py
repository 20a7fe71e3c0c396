"""Training samples from prepared shards: (HQ clip, LQ clip degraded on the fly, reference embedding).

The degradation is drawn per sample and epoch from a seed (``ipfvr_core.degrade``, the same code
as the evaluation suite), so a run is reproducible and a resumed run sees the same data. The
reference is another frame of the same track (its embedding), chosen by the same seed. An
identity image (``images-*.tar``, one frame) becomes a still clip of the wanted length.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ipfvr_core.degrade import SEVERITIES, DegradationConfig, degrade_video
from ipfvr_core.errors import InputError
from ipfvr_core.training.shards import SampleRef, read_index, read_sample


@dataclass(frozen=True)
class ClipSample:
    hq: torch.Tensor  # (F, 3, H, W) float32 in [0, 1]
    lq: torch.Tensor  # (F, 3, H, W) float32 in [0, 1], degraded from hq
    id_embedding: torch.Tensor  # (D,) float32: the reference frame's embedding
    reference: torch.Tensor  # (3, H, W) float32 in [0, 1]: the reference frame itself (aligned crop)


def collate(samples: list[ClipSample]) -> dict[str, torch.Tensor]:
    return {
        "hq": torch.stack([s.hq for s in samples]),  # (B, F, 3, H, W)
        "lq": torch.stack([s.lq for s in samples]),  # (B, F, 3, H, W)
        "id_embedding": torch.stack([s.id_embedding for s in samples]),  # (B, D)
        "reference": torch.stack([s.reference for s in samples]),  # (B, 3, H, W)
    }


class ClipDataset(Dataset[ClipSample]):
    """The clip samples of a prepared folder, cut or resized to ``frames`` x ``resolution``."""

    def __init__(
        self,
        folder: str,
        *,
        frames: int,
        resolution: int,
        degradation: DegradationConfig | str = "moderate",
        seed: int = 0,
        kinds: tuple[str, ...] = ("clips",),
    ) -> None:
        self.refs: list[SampleRef] = [ref for kind in kinds for ref in read_index(folder, kind)]
        if not self.refs:
            raise InputError(
                f"no {' or '.join(kinds)} shards in {folder} (run ipfvr data prepare)",
                field="data",
                code="invalid_option",
            )
        self.frames = frames
        self.resolution = resolution
        self.degradation = SEVERITIES[degradation] if isinstance(degradation, str) else degradation
        self.seed = seed
        self.epoch = 0  # set by the trainer: a new degradation per epoch

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int) -> ClipSample:
        metadata, frames = read_sample(self.refs[index])
        if metadata.get("kind") == "image":
            frames = frames * self.frames  # a still clip
        if len(frames) < self.frames:
            raise InputError(
                f"{self.refs[index].key} has {len(frames)} frames, fewer than {self.frames}",
                field="frames",
                code="invalid_option",
            )
        seed = zlib.crc32(f"{self.seed}/{self.epoch}/{self.refs[index].key}".encode())
        rng = np.random.default_rng(seed)
        start = int(rng.integers(0, len(frames) - self.frames + 1))
        clip = np.stack([self._resize(f) for f in frames[start : start + self.frames]])  # (F, H, W, 3) uint8
        degraded, _ = degrade_video(clip, self.degradation, seed, fps=float(metadata.get("fps", 25.0)))
        embeddings = np.asarray(metadata["embeddings"], np.float32)  # (T, D)
        chosen = int(rng.integers(0, len(embeddings)))
        reference = _to_tensor(self._resize(frames[chosen])[None])[0]  # (3, H, W)
        return ClipSample(
            hq=_to_tensor(clip),
            lq=_to_tensor(degraded),
            id_embedding=torch.from_numpy(embeddings[chosen]),
            reference=reference,
        )

    def _resize(self, frame: np.ndarray) -> np.ndarray:
        if frame.shape[0] == self.resolution:
            return frame
        interpolation = cv2.INTER_AREA if frame.shape[0] > self.resolution else cv2.INTER_CUBIC
        return cv2.resize(frame, (self.resolution, self.resolution), interpolation=interpolation)


def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0  # (F, 3, H, W)
