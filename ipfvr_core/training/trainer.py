"""The training stages: ``restore``, ``feedback`` (identity feedback learning) and ``identity`` (psi_id).

Stage ``restore``: the diffusion loss on (degraded, clean) clip pairs with the reference identity.

Runs under HF ``accelerate``: one process (CPU or GPU) as ``ipfvr train --config``, or DDP/FSDP on
many GPUs and nodes as ``accelerate launch -m ipfvr_core.training --config``. Trained: the LQ input
weights of ``conv_in`` (the stock input channels get no gradient), the identity encoder, every
identity K/V (``to_k_id``/``to_v_id``) and optionally the motion modules. The VAE, the text encoder
and the rest of the U-Net are frozen. Stage ``feedback`` trains the same parameters with the ReFL
loss (``feedback_of``). Stage ``identity`` trains one new LoRA psi_id and nothing else, with the
restore loss on one person's identity images and clips.

The modules it trains and the frozen ones around them are in ``model``; what a run writes
(weights, checkpoints, logs) in ``outputs``.

One step:
 1. VAE latents of the clean clip (sampled) and of the degraded clip (mode): (B, C, F, h, w).
 2. Noise and a timestep per clip; the noised latents, concatenated with the LQ latents on channels.
 3. Conditions: the prompt's text tokens and the reference's identity tokens, each dropped (empty
    prompt, zero embedding) with the configured probabilities, for classifier-free guidance.
 4. The U-Net predicts the noise (or v); the loss is their mean squared error.

Reproducible and exactly resumable: the data order is a function of (seed, epoch), each clip's
degradation of (seed, epoch, sample) and each micro-batch's noise, timesteps and dropout of
(seed, process, micro-batch number); ``accelerator.save_state`` keeps the model, optimizer, LR
schedule, EMA and the step counters. Logs go to ``train_log.csv`` and TensorBoard (``logs/``).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler

from ipfvr_core.diffusion.attention_processor import configure_identity
from ipfvr_core.diffusion.lora import (
    LORA_SUFFIX,
    activate_identity_lora,
    add_identity_lora,
    loaded_loras,
    save_identity_lora,
)
from ipfvr_core.diffusion.samplers import make_sampler, training_noise_scheduler
from ipfvr_core.diffusion.weights import load_pipeline
from ipfvr_core.engines.base import check_canceled
from ipfvr_core.errors import ConfigError
from ipfvr_core.training.config import TrainConfig
from ipfvr_core.training.dataset import ClipDataset, collate
from ipfvr_core.training.model import (
    BACKBONE_LORA,
    RestoreModel,
    decode_latents,
    identity_network,
    trainable_parameters,
    vae_latents,
)
from ipfvr_core.training.outputs import (
    LOG_FILE,
    CsvLog,
    has_tensorboard,
    resume_folder,
    save_checkpoint,
    save_weights,
)


class EpochShuffle(Sampler[int]):
    """A permutation of the samples that depends only on (seed, epoch)."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


class Progress:
    """The step counters, saved with every checkpoint."""

    def __init__(self) -> None:
        self.step = 0  # optimizer steps done
        self.batches = 0  # micro-batches done by this process

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step, "batches": self.batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step, self.batches = int(state["step"]), int(state["batches"])


def _generator(seed: int, *parts: int | str) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32("/".join(map(str, (seed, *parts))).encode()))


def train(
    config: TrainConfig,
    *,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> Path:
    """Run (or resume) the stage; returns the trained weights folder (``output_dir/weights``), or for
    stage identity the LoRA file (``output_dir/loras/<name>.safetensors``). ``should_cancel`` is asked
    after every optimizer step (raises :class:`~ipfvr_core.errors.Canceled`)."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    config = config.checked()
    output = Path(config.output_dir)
    trackers = ["tensorboard"] if has_tensorboard() else []
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=trackers or None,
        project_config=ProjectConfiguration(project_dir=str(output), logging_dir=str(output / "logs")),
    )
    # 1. Model: the pipeline's modules, frozen but for the trained parts
    pipe = load_pipeline(config.weights, device="cpu", dtype=torch.float32)
    resolution = config.resolution or pipe.ipfvr_config.resolution
    unet, identity_encoder = pipe.unet, pipe.identity_encoder
    configure_identity(unet, num_tokens=identity_encoder.token_count(1), scale=config.identity_scale)
    base = pipe.ipfvr_config.base_loras
    if config.stage == "identity":
        assert config.identity_name is not None  # checked()
        add_identity_lora(unet, config.identity_name, pipe.ipfvr_config)
        activate_identity_lora(unet, config.identity_name, always=base)
    elif config.backbone_lora:
        if BACKBONE_LORA not in loaded_loras(unet):  # a run from weights that have one trains it on
            add_identity_lora(unet, BACKBONE_LORA, pipe.ipfvr_config)
            base = (*base, BACKBONE_LORA)
        activate_identity_lora(unet, None, always=base)
    params = trainable_parameters(
        unet,
        identity_encoder,
        motion=config.train_motion_modules,
        whole_unet=config.train_unet,
        lora=config.identity_name,
        backbone_lora=config.backbone_lora,
    )
    if unet.conv_in.weight.requires_grad:
        stock = torch.ones_like(unet.conv_in.weight)
        stock[:, : pipe.latent_channels] = 0  # (C0, 2C, k, k): the stock input channels stay as released
        unet.conv_in.weight.register_hook(lambda grad: grad * stock.to(grad))
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    frozen_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.mixed_precision, torch.float32)
    pipe.vae.to(accelerator.device, dtype=frozen_dtype).requires_grad_(False)
    pipe.text_encoder.to(accelerator.device, dtype=frozen_dtype).requires_grad_(False)
    noise_scheduler = training_noise_scheduler(pipe.scheduler, beta_schedule=pipe.ipfvr_config.beta_schedule)
    with torch.no_grad():
        prompt_text = pipe.encode_prompt([config.prompt]).float().cpu()  # (1, L, D)
        empty_text = pipe.encode_prompt([""]).float().cpu()  # (1, L, D)
    model = RestoreModel(unet, identity_encoder)

    # 2. Data, optimizer, schedule, EMA
    kinds = ("images", "clips") if config.stage == "identity" else ("clips",)
    dataset = ClipDataset(
        config.data,
        frames=config.clip_frames,
        resolution=resolution,
        degradation=config.degradation,
        seed=config.seed,
        kinds=kinds,
    )
    sampler = EpochShuffle(len(dataset), config.seed)
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        collate_fn=collate,
        num_workers=config.num_workers,
        drop_last=True,
    )
    if len(loader) == 0:
        raise ConfigError(f"{len(dataset)} clips make no batch of {config.batch_size}", field="batch_size")
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.adam_weight_decay)
    lr_schedule = get_scheduler(
        "constant_with_warmup", optimizer=optimizer, num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes
    )
    model, optimizer, loader, lr_schedule = accelerator.prepare(model, optimizer, loader, lr_schedule)
    ema = EMAModel(params, decay=config.ema_decay) if config.ema_decay else None
    progress = Progress()
    accelerator.register_for_checkpointing(progress)
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
    if config.resume:
        accelerator.load_state(str(resume_folder(output, config.resume)))
    if trackers:
        accelerator.init_trackers(
            f"ipfvr-{config.stage}",
            config={k: v for k, v in config.model_dump().items() if isinstance(v, (int, float, str, bool))},
        )
    log = CsvLog(output / LOG_FILE, append=bool(config.resume)) if accelerator.is_main_process else None
    eval_batch = collate([dataset[i] for i in range(min(config.eval_samples, len(dataset)))])
    prediction = noise_scheduler.config.prediction_type

    def diffusion_inputs(
        batch: dict[str, torch.Tensor], generator: torch.Generator, *, drop: bool
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """(the model's inputs, the target) of the diffusion loss on ``batch``."""
        batch_size = batch["hq"].shape[0]
        with torch.no_grad():
            latents = vae_latents(pipe, batch["hq"], generator).float()  # (B, C, F, h, w)
            lq_latents = vae_latents(pipe, batch["lq"], None).float()  # (B, C, F, h, w)
        noise = torch.randn(latents.shape, generator=generator).to(latents)  # (B, C, F, h, w)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch_size,), generator=generator)
        noisy = noise_scheduler.add_noise(latents, noise, timesteps.to(latents.device))
        draws = torch.rand(batch_size, generator=generator) if drop else torch.ones(batch_size)  # (B,)
        p_id, p_text, p_both = config.p_drop_identity, config.p_drop_text, config.p_drop_both
        # draws in [0, p_id): identity only; [p_id, p_id+p_text): text only; then p_both: both
        drop_both = (draws >= p_id + p_text) & (draws < p_id + p_text + p_both)
        drop_identity = (draws < p_id) | drop_both
        drop_text = ((draws >= p_id) & (draws < p_id + p_text)) | drop_both
        text = torch.where(drop_text[:, None, None], empty_text, prompt_text)  # (B, L, D)
        model_input = torch.cat([noisy, lq_latents], dim=1)  # (B, 2C, F, h, w)
        inputs = (
            model_input,
            timesteps.to(latents.device),
            text.to(latents.device),
            batch["id_embedding"].to(latents.device),
            (~drop_identity).float().to(latents.device),
        )
        target = noise if prediction == "epsilon" else noise_scheduler.get_velocity(latents, noise, timesteps)
        return inputs, target

    def loss_of(batch: dict[str, torch.Tensor], generator: torch.Generator, *, drop: bool) -> torch.Tensor:
        inputs, target = diffusion_inputs(batch, generator, drop=drop)
        return F.mse_loss(model(*inputs).float(), target.float())

    judge = identity_network(config, accelerator.device) if config.stage == "feedback" else None

    def feedback_of(
        batch: dict[str, torch.Tensor], generator: torch.Generator, step_index: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, reward R) of identity feedback learning on ``batch`` (module docstring of config)."""
        from ipfvr_core.diffusion.feedback import suffix_weighted_reward

        assert judge is not None
        batch_size = batch["hq"].shape[0]
        with torch.no_grad():
            lq_latents = vae_latents(pipe, batch["lq"], None).float()  # (B, C, F, h, w)
            reference = judge(
                F.interpolate(
                    batch["reference"].to(lq_latents.device),
                    size=judge.input_size,
                    mode="bilinear",
                    align_corners=False,
                )
            )  # (B, E)
        sampler = make_sampler(pipe.scheduler, "ddim", beta_schedule=pipe.ipfvr_config.beta_schedule)
        sampler.set_timesteps(config.feedback_steps)
        latents = torch.randn(lq_latents.shape, generator=generator).to(lq_latents) * sampler.init_noise_sigma
        low, high = config.feedback_window
        k = step_index if step_index is not None else int(torch.randint(low, high + 1, (1,), generator=generator))
        text = prompt_text.expand(batch_size, -1, -1).to(lq_latents.device)  # (B, L, D)
        embedding = batch["id_embedding"].to(lq_latents.device)
        keep = torch.ones(batch_size, device=lq_latents.device)

        def step_inputs(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
            model_input = torch.cat([sampler.scale_model_input(x, t), lq_latents], dim=1)  # (B, 2C, F, h, w)
            return model_input, t.expand(batch_size).to(x.device), text, embedding, keep

        with torch.no_grad():  # 1. roll out to step k without gradients
            for t in sampler.timesteps[:k]:
                latents = sampler.step(model(*step_inputs(latents, t)), t, latents).prev_sample
        # 2. one step with gradients, to x0; the diffusion loss's inputs ride in the same U-Net call
        # (one forward per backward, as DDP requires): inputs concatenated on the batch axis
        t = sampler.timesteps[k]
        inputs = step_inputs(latents, t)
        diffusion_target = None
        if config.diffusion_loss_weight:
            extra, diffusion_target = diffusion_inputs(batch, generator, drop=True)
            inputs = tuple(torch.cat([a, b.to(a)]) for a, b in zip(inputs, extra, strict=True))  # 2B rows
        predicted = model(*inputs)  # (B or 2B, C, F, h, w)
        x0 = sampler.step(predicted[:batch_size], t, latents).pred_original_sample  # (B, C, F, h, w)
        frames = decode_latents(pipe, x0)  # (B*F, 3, H, W) in [0, 1], differentiable
        faces = F.interpolate(frames, size=judge.input_size, mode="bilinear", align_corners=False)
        embeddings = judge(faces.float()).unflatten(0, (batch_size, x0.shape[2]))  # (B, F, E)
        similarity = (embeddings * reference[:, None]).sum(dim=-1)  # (B, F) cosines (unit vectors)
        reward = torch.stack([suffix_weighted_reward(s) for s in similarity]).mean()  # 3. suffix-weighted
        loss = config.identity_loss_weight * (1.0 - reward)
        if diffusion_target is not None:
            diffusion = F.mse_loss(predicted[batch_size:].float(), diffusion_target.float())
            loss = loss + config.diffusion_loss_weight * diffusion
        return loss, reward

    def evaluate() -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            result = {"eval_loss": float(loss_of(eval_batch, _generator(config.seed, "eval"), drop=False))}
            if judge is not None:
                step_index = sum(config.feedback_window) // 2
                _, reward = feedback_of(eval_batch, _generator(config.seed, "eval-feedback"), step_index)
                result["eval_reward"] = float(reward)
        model.train()
        return result

    def emit(row: dict[str, Any]) -> None:
        accelerator.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])
        if log is not None:
            log.write(row)
        if on_log is not None and accelerator.is_main_process:
            on_log(row)

    # 3. Loop: micro-batches, optimizer steps, logs, evaluations, checkpoints
    batches_per_epoch = len(loader)
    if progress.step == 0:  # where the curve starts
        emit({"step": 0, "epoch": 0, **evaluate()})
    model.train()
    while progress.step < config.max_steps:
        epoch = progress.batches // batches_per_epoch
        sampler.set_epoch(epoch)
        dataset.epoch = epoch
        skip = progress.batches % batches_per_epoch
        for batch in accelerator.skip_first_batches(loader, skip) if skip else loader:
            generator = _generator(config.seed, accelerator.process_index, progress.batches)
            reward = None
            with accelerator.accumulate(model):
                if config.stage == "feedback":
                    loss, reward = feedback_of(batch, generator)
                else:
                    loss = loss_of(batch, generator, drop=True)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                lr_schedule.step()
                optimizer.zero_grad()
            progress.batches += 1
            if not accelerator.sync_gradients:
                continue
            progress.step += 1
            if ema is not None:
                ema.step(params)
            row: dict[str, Any] = {
                "step": progress.step,
                "epoch": epoch,
                "loss": float(accelerator.reduce(loss.detach(), reduction="mean")),
                "lr": lr_schedule.get_last_lr()[0],
            }
            if reward is not None:
                row["reward"] = float(accelerator.reduce(reward.detach(), reduction="mean"))
            if config.verify_replicas_every and progress.step % config.verify_replicas_every == 0:
                sums = torch.stack([p.detach().double().sum() for p in params])[None]  # (1, P)
                gathered = accelerator.gather(sums.to(accelerator.device))  # (processes, P)
                row["replicas_equal"] = int(bool((gathered == gathered[0]).all()))
            if progress.step % config.eval_every == 0 or progress.step == config.max_steps:
                row.update(evaluate())
            if progress.step % config.log_every == 0 or "eval_loss" in row or "replicas_equal" in row:
                emit(row)
            if progress.step % config.checkpoint_every == 0:
                save_checkpoint(accelerator, output, progress.step, config.keep_checkpoints)
            if progress.step >= config.max_steps:
                break
            check_canceled(should_cancel)

    # 4. The trained weights (EMA weights when EMA is on), in the layout the engine reads
    accelerator.wait_for_everyone()
    if config.stage == "identity":
        weights = output / "loras" / f"{config.identity_name}{LORA_SUFFIX}"
    else:
        weights = output / "weights"
    if accelerator.is_main_process:
        if ema is not None:
            ema.store(params)
            ema.copy_to(params)
        if config.stage == "identity":
            assert config.identity_name is not None  # checked()
            save_identity_lora(accelerator.unwrap_model(model).unet, config.identity_name, weights)
        else:
            save_weights(pipe, config, weights)
        if ema is not None:
            ema.restore(params)
    accelerator.end_training()
    return weights
