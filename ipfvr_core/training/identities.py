"""A person's identity module: the per-identity LoRA psi_id trained from their photos (stage ``identity``).

``train_identity`` is what ``ipfvr identities train`` and the service's ``train`` workers run:

1. the photos' largest faces, checked to be one person, aligned at the model's resolution
   (:func:`~ipfvr_core.training.prepare.prepare_identity`, identity images in ``images-*.tar``);
2. stage ``identity`` of :func:`~ipfvr_core.training.trainer.train` (HF accelerate, one process):
   a new LoRA on the U-Net's attention projections, nothing else trained, with the restore loss on
   the photos degraded on the fly (still clips of ``clip_frames``);
3. the LoRA file, in the diffusers LoRA format the engine loads (``loras/<name>.safetensors``).

Defaults follow DreamBooth-LoRA's published recipe (diffusers ``train_dreambooth_lora.py``:
AdamW at 1e-4, constant schedule, a few hundred steps, no EMA) at the rank of the weights' config.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ipfvr_core.errors import InputError
from ipfvr_core.faces.base import FaceAnalyzer
from ipfvr_core.training.config import TrainConfig
from ipfvr_core.training.prepare import PrepareConfig, prepare_identity


@dataclass(frozen=True)
class IdentitySettings:
    """How an identity is trained (one set for the CLI and the service)."""

    steps: int = 300  # optimizer steps (DreamBooth-LoRA: 400-800 at 512^2; a face LoRA converges sooner)
    learning_rate: float = 1e-4  # AdamW, constant
    clip_frames: int = 1  # frames per still clip (the LoRA adapts the spatial layers)
    degradation: str = "moderate"  # ipfvr_core.degrade severity of the on-the-fly LQ input
    min_face_px: float = 64.0  # least face size in a photo (px)
    max_photos: int = 16  # most photos of one identity
    seed: int = 0  # data order, degradations, noise, timesteps


@dataclass(frozen=True)
class TrainedIdentity:
    """What training an identity produced (``summary`` goes into the service's record)."""

    lora: Path  # the LoRA file
    photos: int  # photos used
    loss_start: float  # restore loss on the fixed evaluation batch before training
    loss_end: float  # and after

    @property
    def summary(self) -> dict[str, float | int]:
        return {"photos": self.photos, "loss_start": round(self.loss_start, 6), "loss_end": round(self.loss_end, 6)}


def train_identity(
    photos: Sequence[Path],
    *,
    name: str,
    weights: Path,
    analyzer: FaceAnalyzer,
    work_dir: Path,
    resolution: int,
    settings: IdentitySettings | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> TrainedIdentity:
    """Train LoRA ``name`` from ``photos`` on the model in ``weights``; the file lands under ``work_dir/loras/``."""
    from ipfvr_core.diffusion.lora import check_lora_name  # diffusers: not on the CLI's start-up path
    from ipfvr_core.training.trainer import train

    settings = settings or IdentitySettings()
    check_lora_name(name)
    if not photos:
        raise InputError("give at least one photo", field="photos", code="missing_field")
    if len(photos) > settings.max_photos:
        raise InputError(
            f"at most {settings.max_photos} photos, got {len(photos)}", field="photos", code="too_many_references"
        )
    data = Path(work_dir) / "data"
    prepared = prepare_identity(
        photos, data, analyzer, PrepareConfig(resolution=resolution, clip_frames=1, min_face_px=settings.min_face_px)
    )
    config = TrainConfig(
        stage="identity",
        identity_name=name,
        data=str(data),
        weights=str(weights),
        output_dir=str(work_dir),
        seed=settings.seed,
        max_steps=settings.steps,
        learning_rate=settings.learning_rate,
        clip_frames=settings.clip_frames,
        degradation=settings.degradation,
        ema_decay=None,
        p_drop_identity=0.0,
        p_drop_text=0.0,
        p_drop_both=0.0,  # psi_id learns the conditioned model
        eval_every=settings.steps,
        eval_samples=min(prepared.images, 4),
        checkpoint_every=settings.steps + 1,
        log_every=max(1, settings.steps // 20),
    )
    evals: list[float] = []  # the evaluation loss at step 0 and at the end (eval_every = steps)
    lora = train(
        config,
        should_cancel=should_cancel,
        on_log=lambda row: evals.append(float(row["eval_loss"])) if "eval_loss" in row else None,
    )
    return TrainedIdentity(lora=lora, photos=prepared.images, loss_start=evals[0], loss_end=evals[-1])
