"""The training stages: ``restore``, ``feedback`` (identity feedback learning) and ``identity`` (psi_id).

Stage ``restore``: the diffusion loss on (degraded, clean) clip pairs with the reference identity.

Runs under HF ``accelerate``: one process (CPU or GPU) as ``ipfvr train --config``, or DDP/FSDP on
many GPUs and nodes as ``accelerate launch -m ipfvr_core.training --config``. Trained: the LQ input
weights of ``conv_in`` (the stock input channels get no gradient), the identity encoder, every
identity K/V (``to_k_id``/``to_v_id``) and optionally the motion modules. The VAE, the text encoder
and the rest of the U-Net are frozen. Stage ``feedback`` trains the same parameters with the ReFL
loss (``feedback_of``). Stage ``identity`` trains one new LoRA psi_id and nothing else, with the
restore loss on one person's identity images and clips.

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

import csv
import math
import shutil
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler

from ipfvr_core.diffusion.attention_processor import configure_identity
from ipfvr_core.diffusion.config import COMPONENT_FOLDER_FIELDS
from ipfvr_core.diffusion.guidance import frame_condition_embeds
from ipfvr_core.diffusion.identity_tokens import IdentityEncoder
from ipfvr_core.diffusion.lora import (
    LORA_SUFFIX,
    activate_identity_lora,
    add_identity_lora,
    loaded_loras,
    save_identity_lora,
)
from ipfvr_core.diffusion.pipeline_ipfvr import IPFVRPipeline
from ipfvr_core.diffusion.samplers import make_sampler, training_noise_scheduler
from ipfvr_core.diffusion.weights import (
    RANDOM_WEIGHTS_MARKER,
    component_path,
    load_pipeline,
    save_ipfvr_weights,
)
from ipfvr_core.engines.base import check_canceled
from ipfvr_core.errors import ConfigError
from ipfvr_core.training.config import TrainConfig
from ipfvr_core.training.dataset import ClipDataset, collate

LOG_FILE = "train_log.csv"
LOG_FIELDS = ("step", "epoch", "loss", "reward", "lr", "eval_loss", "eval_reward", "replicas_equal")
CHECKPOINTS = "checkpoints"
BACKBONE_LORA = "backbone"  # name of the backbone LoRA of stages restore and feedback (a base LoRA of the output)


class RestoreModel(nn.Module):
    """The trained modules behind one forward, so that accelerate wraps (and DDP syncs) one module."""

    def __init__(self, unet: nn.Module, identity_encoder: IdentityEncoder) -> None:
        super().__init__()
        self.unet = unet
        self.identity_encoder = identity_encoder

    def forward(self, model_input: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor,
                id_embedding: torch.Tensor, keep_identity: torch.Tensor) -> torch.Tensor:
        """``model_input`` (B, 2C, F, h, w), ``timesteps`` (B,), ``text`` (B, L, D), ``id_embedding``
        (B, E), ``keep_identity`` (B,) 1/0 -> the U-Net's prediction (B, C, F, h, w)."""
        num_frames = model_input.shape[2]
        embeddings = id_embedding * keep_identity[:, None]  # (B, E); a dropped identity is the zero embedding
        tokens = torch.cat([self.identity_encoder(e[None]) for e in embeddings])  # (B, N, D)
        states = torch.cat([text, tokens.to(text.dtype)], dim=1)  # (B, L+N, D)
        states = frame_condition_embeds(states, num_frames)  # (B*F, L+N, D)
        return self.unet(model_input, timesteps, encoder_hidden_states=states).sample  # (B, C, F, h, w)


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


def _generator(seed: int, *parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32("/".join(map(str, (seed, *parts))).encode()))


def _latents(pipe: IPFVRPipeline, frames: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """VAE latents (B, C, F, h, w) of frames (B, F, 3, H, W) in [0, 1]; sampled when a generator is given."""
    batch, num_frames = frames.shape[:2]
    x = frames.flatten(0, 1).to(device=pipe.vae.device, dtype=pipe.vae.dtype) * 2.0 - 1.0  # (B*F, 3, H, W)
    dist = pipe.vae.encode(x).latent_dist
    if generator is None:
        z = dist.mode()
    else:
        z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=generator).to(dist.mean)  # (B*F, C, h, w)
    shift = pipe.vae.config.shift_factor or 0.0
    z = (z - shift) * pipe.vae.config.scaling_factor
    return z.unflatten(0, (batch, num_frames)).permute(0, 2, 1, 3, 4)  # (B, C, F, h, w)


def _decode(pipe: IPFVRPipeline, latents: torch.Tensor) -> torch.Tensor:
    """Frames (B*F, 3, H, W) in [0, 1] from latents (B, C, F, h, w), with gradients (the VAE stays frozen)."""
    shift = pipe.vae.config.shift_factor or 0.0
    z = latents.permute(0, 2, 1, 3, 4).flatten(0, 1) / pipe.vae.config.scaling_factor + shift  # (B*F, C, h, w)
    return (pipe.vae.decode(z.to(pipe.vae.dtype)).sample.float() / 2.0 + 0.5).clamp(0.0, 1.0)


def _identity_network(config: TrainConfig, device: torch.device) -> nn.Module:
    """The frozen, differentiable identity network the feedback stage is rewarded by: the FaceNet port,
    ``arcface:PATH`` (an insightface recogniser's ONNX file, run by torch ops), or a factory
    ``package.module:function`` returning a module that maps (N, 3, S, S) RGB in [0, 1] to (N, E)
    unit vectors and has ``input_size`` (S)."""
    import importlib

    from ipfvr_core.identity_nets.facenet import load_facenet

    if config.identity_network == "facenet":
        network = load_facenet()
    elif config.identity_network.startswith("arcface:"):
        from ipfvr_core.identity_nets.onnx_graph import ArcFaceNetwork

        network = ArcFaceNetwork(config.identity_network.removeprefix("arcface:"))
    else:
        module_name, _, function = config.identity_network.partition(":")
        try:
            network = getattr(importlib.import_module(module_name), function)()
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(f"cannot load {config.identity_network!r}: {exc}", field="identity_network") from exc
        if not isinstance(network, nn.Module) or not isinstance(getattr(network, "input_size", None), int):
            raise ConfigError(f"{config.identity_network!r} did not return a torch module with an input_size",
                              field="identity_network")
    return network.to(device).requires_grad_(False)


def trainable_parameters(unet: nn.Module, identity_encoder: nn.Module, *, motion: bool,
                         whole_unet: bool = False, lora: str | None = None,
                         backbone_lora: bool = False) -> list[nn.Parameter]:
    """Freeze all but what the stage trains; returns those parameters (requires_grad set).

    ``lora``: the LoRA adapter of that name alone (stage identity); ``backbone_lora``: also the
    backbone LoRA (``BACKBONE_LORA``)."""
    unet.requires_grad_(False)
    if lora is not None:
        identity_encoder.requires_grad_(False)
        chosen = [p for n, p in unet.named_parameters() if "lora_" in n and f".{lora}." in n]
        if not chosen:
            raise ConfigError(f"LoRA {lora!r} has no parameters in this U-Net", field="identity_name")
        return [p.requires_grad_(True) for p in chosen]
    identity_encoder.requires_grad_(True)
    chosen = []
    for name, parameter in unet.named_parameters():
        adapter = name == "conv_in.weight" or "to_k_id" in name or "to_v_id" in name
        backbone = backbone_lora and "lora_" in name and f".{BACKBONE_LORA}." in name
        if adapter or backbone or whole_unet or (motion and "motion_modules" in name):
            parameter.requires_grad_(True)
            chosen.append(parameter)
    return chosen + list(identity_encoder.parameters())


def train(config: TrainConfig, *, on_log: Callable[[dict[str, Any]], None] | None = None,
          should_cancel: Callable[[], bool] | None = None) -> Path:
    """Run (or resume) the stage; returns the trained weights folder (``output_dir/weights``), or for
    stage identity the LoRA file (``output_dir/loras/<name>.safetensors``). ``should_cancel`` is asked
    after every optimizer step (raises :class:`~ipfvr_core.errors.Canceled`)."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    config = config.checked()
    output = Path(config.output_dir)
    trackers = ["tensorboard"] if _has_tensorboard() else []
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
    params = trainable_parameters(unet, identity_encoder, motion=config.train_motion_modules,
                                  whole_unet=config.train_unet, lora=config.identity_name,
                                  backbone_lora=config.backbone_lora)
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
    dataset = ClipDataset(config.data, frames=config.clip_frames, resolution=resolution,
                          degradation=config.degradation, seed=config.seed, kinds=kinds)
    sampler = EpochShuffle(len(dataset), config.seed)
    loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, collate_fn=collate,
                        num_workers=config.num_workers, drop_last=True)
    if len(loader) == 0:
        raise ConfigError(f"{len(dataset)} clips make no batch of {config.batch_size}", field="batch_size")
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.adam_weight_decay)
    lr_schedule = get_scheduler("constant_with_warmup", optimizer=optimizer,
                                num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes)
    model, optimizer, loader, lr_schedule = accelerator.prepare(model, optimizer, loader, lr_schedule)
    ema = EMAModel(params, decay=config.ema_decay) if config.ema_decay else None
    progress = Progress()
    accelerator.register_for_checkpointing(progress)
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
    if config.resume:
        accelerator.load_state(str(_resume_folder(output, config.resume)))
    if trackers:
        accelerator.init_trackers(f"ipfvr-{config.stage}", config={k: v for k, v in config.model_dump().items()
                                                           if isinstance(v, (int, float, str, bool))})
    log = _CsvLog(output / LOG_FILE, append=bool(config.resume)) if accelerator.is_main_process else None
    eval_batch = collate([dataset[i] for i in range(min(config.eval_samples, len(dataset)))])
    prediction = noise_scheduler.config.prediction_type

    def diffusion_inputs(batch: dict[str, torch.Tensor], generator: torch.Generator, *, drop: bool
                         ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """(the model's inputs, the target) of the diffusion loss on ``batch``."""
        batch_size = batch["hq"].shape[0]
        with torch.no_grad():
            latents = _latents(pipe, batch["hq"], generator).float()  # (B, C, F, h, w)
            lq_latents = _latents(pipe, batch["lq"], None).float()  # (B, C, F, h, w)
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
        inputs = (model_input, timesteps.to(latents.device), text.to(latents.device),
                  batch["id_embedding"].to(latents.device), (~drop_identity).float().to(latents.device))
        target = noise if prediction == "epsilon" else noise_scheduler.get_velocity(latents, noise, timesteps)
        return inputs, target

    def loss_of(batch: dict[str, torch.Tensor], generator: torch.Generator, *, drop: bool) -> torch.Tensor:
        inputs, target = diffusion_inputs(batch, generator, drop=drop)
        return F.mse_loss(model(*inputs).float(), target.float())

    judge = _identity_network(config, accelerator.device) if config.stage == "feedback" else None

    def feedback_of(batch: dict[str, torch.Tensor], generator: torch.Generator,
                    step_index: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, reward R) of identity feedback learning on ``batch`` (module docstring of config)."""
        from ipfvr_core.diffusion.feedback import suffix_weighted_reward

        assert judge is not None
        batch_size = batch["hq"].shape[0]
        with torch.no_grad():
            lq_latents = _latents(pipe, batch["lq"], None).float()  # (B, C, F, h, w)
            reference = judge(F.interpolate(batch["reference"].to(lq_latents.device), size=judge.input_size,
                                            mode="bilinear", align_corners=False))  # (B, E)
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
        frames = _decode(pipe, x0)  # (B*F, 3, H, W) in [0, 1], differentiable
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
            row: dict[str, Any] = {"step": progress.step, "epoch": epoch,
                                   "loss": float(accelerator.reduce(loss.detach(), reduction="mean")),
                                   "lr": lr_schedule.get_last_lr()[0]}
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
                _checkpoint(accelerator, output, progress.step, config.keep_checkpoints)
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
            save_identity_lora(accelerator.unwrap_model(model).unet, config.identity_name, weights)
        else:
            _save_weights(pipe, config, weights)
        if ema is not None:
            ema.restore(params)
    accelerator.end_training()
    return weights


def _save_weights(pipe: IPFVRPipeline, config: TrainConfig, weights: Path) -> None:
    """``ipfvr/`` from the trained modules; stock components stay where they are (absolute folders)."""
    source = Path(config.weights).resolve()
    folders = {name: str(component_path(source, getattr(pipe.ipfvr_config, name)).resolve())
               for name in COMPONENT_FOLDER_FIELDS}
    if config.train_unet:
        _save_unet2d(pipe, Path(folders["unet_folder"]), weights / "unet")
        folders["unet_folder"] = "unet"
    if config.train_motion_modules or config.train_unet:
        pipe.unet.save_motion_modules(str(weights / "motion_adapter"))
        folders["motion_adapter_folder"] = "motion_adapter"
    source_loras = component_path(source, pipe.ipfvr_config.lora_folder).resolve()
    folders["lora_folder"] = str(source_loras)
    if config.backbone_lora:  # the trained backbone LoRA, and the other base LoRAs beside it, in weights/loras/
        save_identity_lora(pipe.unet, BACKBONE_LORA, weights / "loras" / f"{BACKBONE_LORA}{LORA_SUFFIX}")
        for name in pipe.ipfvr_config.base_loras:
            if name != BACKBONE_LORA:
                shutil.copyfile(source_loras / f"{name}{LORA_SUFFIX}", weights / "loras" / f"{name}{LORA_SUFFIX}")
        folders["lora_folder"] = "loras"
        folders["base_loras"] = tuple(dict.fromkeys((*pipe.ipfvr_config.base_loras, BACKBONE_LORA)))
    if config.stage == "feedback":  # evaluation must judge with another network; the weights say which
        folders["trained_identity_network"] = config.identity_network
    pipe.ipfvr_config = pipe.ipfvr_config.replace(**folders, identity_scale=config.identity_scale)
    save_ipfvr_weights(weights, pipe)
    if (source / RANDOM_WEIGHTS_MARKER).is_file():
        shutil.copyfile(source / RANDOM_WEIGHTS_MARKER, weights / RANDOM_WEIGHTS_MARKER)


def _save_unet2d(pipe: IPFVRPipeline, source: Path, target: Path) -> None:
    """The trained U-Net's 2-D part in the stock layout (``unet/``): no motion modules, no identity
    K/V, and only the stock input channels of ``conv_in`` (the LQ ones go to ``ipfvr/``)."""
    from diffusers import UNet2DConditionModel

    unet2d = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(source)))
    state = {k: v for k, v in pipe.unet.state_dict().items() if "motion_modules" not in k and ".processor." not in k}
    state["conv_in.weight"] = state["conv_in.weight"][:, : pipe.latent_channels]  # (C0, C, k, k)
    missing, unexpected = unet2d.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(f"the trained U-Net does not map onto {source}: missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}", field="weights")
    unet2d.save_pretrained(str(target))


def _checkpoint(accelerator: Any, output: Path, step: int, keep: int) -> None:
    accelerator.save_state(str(output / CHECKPOINTS / f"step-{step:08d}"))
    if accelerator.is_main_process:
        for old in sorted((output / CHECKPOINTS).glob("step-*"))[:-keep]:
            shutil.rmtree(old)


def _resume_folder(output: Path, resume: str) -> Path:
    if resume != "latest":
        folder = Path(resume)
    else:
        found = sorted((output / CHECKPOINTS).glob("step-*"))
        if not found:
            raise ConfigError(f"no checkpoint under {output / CHECKPOINTS}", field="resume")
        folder = found[-1]
    if not folder.is_dir():
        raise ConfigError(f"checkpoint {folder} does not exist", field="resume")
    return folder


def _has_tensorboard() -> bool:
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        return False
    return True


class _CsvLog:
    def __init__(self, path: Path, *, append: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not (append and path.exists())
        self.file = path.open("w" if fresh else "a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=LOG_FIELDS)
        if fresh:
            self.writer.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        self.writer.writerow({k: (f"{v:.8g}" if isinstance(v, float) and math.isfinite(v) else v)
                              for k, v in row.items()})
        self.file.flush()
