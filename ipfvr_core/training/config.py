"""Training configs: one pydantic model per stage, read from YAML (``ipfvr train --config``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ipfvr_core.errors import ConfigError


class TrainConfig(BaseModel):
    """A training run of one stage.

    ``restore``: the diffusion loss on degraded/clean clip pairs with a reference identity.
    ``feedback``: identity feedback learning (ReFL): roll the sampler out without gradients to a
    random late step, take one step with gradients to x0, decode it, and reward each frame's
    identity against the reference with a differentiable network, aggregated by suffix weighting;
    the loss is ``identity_loss_weight * (1 - R) + diffusion_loss_weight * L_diffusion``.
    ``identity``: the per-identity LoRA psi_id alone, with the restore loss on one person's identity
    images (``images-*.tar``, as still clips) and clips; written to ``output_dir/loras/<name>.safetensors``.

    Defaults follow the peers where they publish (``shared/research/models-training-eval.md``):
    AdamW at 1e-4 with a constant schedule (IP-Adapter, AnimateDiff), EMA 0.9999, 24-frame clips
    (IP-FVR), condition dropout 5% each for classifier-free guidance (IP-Adapter); ReFL's late-step
    window ([30, 39] of 40 steps: the last quarter).
    """

    model_config = ConfigDict(extra="forbid")

    stage: Literal["restore", "feedback", "identity"] = "restore"  # which stage this run trains
    data: str  # folder written by `ipfvr data prepare` (clips-*.tar)
    weights: str  # weights folder to start from (`ipfvr weights init-tiny`, an SD-1.5 layout, a previous run)
    output_dir: str  # checkpoints/, logs/, train_log.csv and the trained weights/ go here
    seed: int = 0  # everything random (data order, degradations, noise, timesteps) derives from it
    max_steps: int = Field(10_000, ge=1)  # optimizer steps to run
    batch_size: int = Field(1, ge=1)  # clips per process per micro-batch
    gradient_accumulation_steps: int = Field(1, ge=1)  # micro-batches per optimizer step
    learning_rate: float = Field(1e-4, gt=0)  # AdamW learning rate
    lr_warmup_steps: int = Field(0, ge=0)  # linear warm-up, then constant
    adam_weight_decay: float = Field(1e-2, ge=0)  # AdamW decoupled weight decay
    max_grad_norm: float = Field(1.0, gt=0)  # gradient clipping
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"  # accelerate's autocast (bf16 also on CPU)
    gradient_checkpointing: bool = False  # recompute U-Net activations in backward (memory for time)
    ema_decay: float | None = Field(0.9999, gt=0, lt=1)  # EMA of the trained parameters; None = off
    clip_frames: int = Field(24, ge=1)  # frames per training clip
    resolution: int | None = Field(None, ge=16)  # crop side; None = the weights' resolution
    degradation: Literal["mild", "moderate", "severe"] = "moderate"  # ipfvr_core.degrade severity (KEEP ranges)
    identity_scale: float = Field(1.0, ge=0)  # lambda of the identity cross-attention while training
    prompt: str = ""  # the text condition of every clip
    p_drop_identity: float = Field(0.05, ge=0, le=1)  # drop the identity alone (zero embedding), for CFG
    p_drop_text: float = Field(0.05, ge=0, le=1)  # drop the text alone (empty prompt)
    p_drop_both: float = Field(0.05, ge=0, le=1)  # drop both
    train_motion_modules: bool = False  # also train the AnimateDiff motion modules (saved to motion_adapter/)
    # restore/feedback: also train a LoRA on the backbone's attention (the weights' rank), saved as an always-active
    # base LoRA
    backbone_lora: bool = False
    train_unet: bool = False  # fine-tune the whole U-Net (small models only; saved to unet/ and motion_adapter/)
    checkpoint_every: int = Field(500, ge=1)  # optimizer steps between accelerate checkpoints
    keep_checkpoints: int = Field(3, ge=1)  # older checkpoints are deleted
    eval_every: int = Field(100, ge=1)  # steps between evaluations (fixed batch, noise and timesteps)
    eval_samples: int = Field(2, ge=1)  # clips in the evaluation batch
    log_every: int = Field(10, ge=1)  # steps between log rows
    num_workers: int = Field(0, ge=0)  # DataLoader worker processes
    resume: str | None = None  # "latest" or a checkpoint folder to continue from (exactly)
    verify_replicas_every: int = Field(0, ge=0)  # steps between checks that every process holds the same weights
    # --- stage feedback only ---
    # trained against: "facenet" (the port), "arcface:PATH" (insightface ONNX), or "package.module:factory"
    identity_network: str = "facenet"

    feedback_steps: int = Field(40, ge=2)  # sampler steps of the rollout (ReFL: 40)
    feedback_window: tuple[int, int] = (30, 39)  # the step taken with gradients is drawn from here (ReFL)
    identity_loss_weight: float = Field(1.0, ge=0)  # lambda_id of (1 - R)
    diffusion_loss_weight: float = Field(1.0, ge=0)  # weight of the restore loss kept alongside (0 = reward only)
    # --- stage identity only ---
    identity_name: str | None = None  # name of the LoRA psi_id trained (a file stem: letters, digits, '_', '.', '-')

    def checked(self) -> TrainConfig:
        if self.backbone_lora and self.train_unet:
            raise ConfigError("train_unet already trains the whole U-Net; drop one", field="backbone_lora")
        if self.stage == "identity":
            from ipfvr_core.diffusion.lora import check_lora_name

            if self.identity_name is None:
                raise ConfigError("stage identity needs the LoRA's name", field="identity_name")
            try:
                check_lora_name(self.identity_name)
            except ConfigError as exc:
                raise ConfigError(exc.message, field="identity_name") from exc
            if self.train_unet or self.train_motion_modules or self.backbone_lora:
                raise ConfigError("stage identity trains the identity's LoRA alone", field="train_unet")
        if self.p_drop_identity + self.p_drop_text + self.p_drop_both > 1:
            raise ConfigError("the three drop probabilities sum above 1", field="p_drop_both")
        low, high = self.feedback_window
        if not 0 <= low <= high < self.feedback_steps:
            raise ConfigError(
                f"must satisfy 0 <= low <= high < feedback_steps ({self.feedback_steps})", field="feedback_window"
            )
        return self


def load_train_config(path: str | Path) -> TrainConfig:
    """Read a YAML training config; a bad field raises ConfigError naming it."""
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path} ({exc.strerror or exc})", field="config") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not YAML: {exc}", field="config") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of fields", field="config")
    try:
        return TrainConfig.model_validate(raw).checked()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or "config"
        raise ConfigError(str(first.get("msg", "invalid value")), field=field) from exc
