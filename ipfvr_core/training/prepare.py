"""``ipfvr data prepare``: face videos (and photos) into aligned training shards.

Each video goes through the restorer's own face pipeline: detection and identity embedding per
frame, tracks linked by position and identity, Gaussian-smoothed 5-point landmarks, FFHQ
alignment at ``resolution``. Every stretch of ``clip_frames`` consecutive detected frames of a
track that passes the filters becomes one sample of ``clips-*.tar`` (frames as PNG, metadata with
the per-frame embeddings). Photos become one-frame samples of ``images-*.tar`` (identity images).

Filters (each recorded in the manifest with what it removed):

* face size: the aligned crop's native face size (px of the source) at least ``min_face_px``;
* sharpness: the mean variance of the Laplacian of the aligned grey crops, per 512 px of side, at
  least ``min_sharpness``;
* identity consistency: every frame's embedding within ``max_identity_spread`` (the analyzer's
  own distance) of the track's mean embedding, so a clip never mixes two people;
* photos: only confident detections (the analyzer's ``confident_score``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ipfvr_core.errors import ConfigError, InputError
from ipfvr_core.faces.align import estimate_affine, native_size, warp_face
from ipfvr_core.faces.base import FaceAnalyzer
from ipfvr_core.faces.smoothing import gaussian_smooth
from ipfvr_core.faces.tracks import Track, link_tracks
from ipfvr_core.image_io import read_image
from ipfvr_core.training.shards import ShardWriter
from ipfvr_core.video_io import iter_frames, probe

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class PrepareConfig:
    resolution: int = 512  # side of the aligned crops (FFHQ template)
    clip_frames: int = 24  # frames per clip sample (the paper's clip length)
    clip_stride: int | None = None  # frames between clip starts in a track; None = clip_frames (no overlap)
    max_clips_per_track: int = 50  # a long shot does not dominate the data set
    min_face_px: float = 64.0  # least native face size (px of the source frame) of every frame of a clip
    min_sharpness: float = 20.0  # least mean Laplacian variance of the aligned grey crops (per 512 px side)
    max_identity_spread: float | None = (
        None  # most distance of a frame to its track's mean; None = analyzer's match threshold
    )
    smoothing_sigma: float = 3.0  # Gaussian landmark smoothing over time, in frames (as the restorer)
    max_gap_frames: int = 0  # detector misses bridged inside a clip (0: clips of detected frames only)
    shard_samples: int = 64  # samples per tar shard

    def validate(self) -> PrepareConfig:
        if not 16 <= self.resolution <= 2048 or self.resolution % 8:
            raise ConfigError("must be a multiple of 8 from 16 to 2048", field="resolution")
        if self.clip_frames < 1:
            raise ConfigError("must be at least 1", field="clip_frames")
        if self.clip_stride is not None and self.clip_stride < 1:
            raise ConfigError("must be at least 1", field="clip_stride")
        if self.shard_samples < 1:
            raise ConfigError("must be at least 1", field="shard_samples")
        return self


@dataclass
class Manifest:
    """What a prepare run wrote and why it dropped the rest (``manifest.json``)."""

    config: dict[str, Any]
    face_backend: str
    embedding_dim: int
    metric: str
    clips: int = 0
    images: int = 0
    clip_shards: list[str] = field(default_factory=list)
    image_shards: list[str] = field(default_factory=list)
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)  # file name -> counts
    rejected: dict[str, int] = field(default_factory=dict)  # filter -> clips (or photos) it removed

    def write(self, folder: Path) -> Path:
        path = folder / MANIFEST
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True))
        return path


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of a grey (H, W, 3) uint8 crop, scaled to a 512 px side."""
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(cv2.Laplacian(grey, cv2.CV_32F).var()) * (crop.shape[0] / 512.0) ** 2


def prepare_dataset(
    sources: Sequence[Path],
    out_dir: Path,
    analyzer: FaceAnalyzer,
    config: PrepareConfig | None = None,
    *,
    backend_name: str = "",
    progress: Callable[[str], None] | None = None,
) -> Manifest:
    """Write clip and image shards for every video and photo in ``sources`` (files or folders) into ``out_dir``."""
    config = (config or PrepareConfig()).validate()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = _collect(sources)
    manifest = Manifest(
        config=asdict(config), face_backend=backend_name, embedding_dim=analyzer.embedding_dim, metric=analyzer.metric
    )
    rejected: Counter[str] = Counter()
    clips = ShardWriter(out_dir, "clips", max_samples=config.shard_samples)
    images = ShardWriter(out_dir, "images", max_samples=config.shard_samples)
    spread = config.max_identity_spread if config.max_identity_spread is not None else analyzer.match_threshold
    try:
        for path in files:
            if progress is not None:
                progress(path.name)
            if path.suffix.lower() in IMAGE_SUFFIXES:
                counts = _prepare_image(path, analyzer, config, images, rejected)
            else:
                counts = _prepare_video(path, analyzer, config, spread, clips, rejected)
            manifest.sources[path.name] = counts
    finally:
        clips.close()
        images.close()
    manifest.clips, manifest.images = clips.samples, images.samples
    manifest.clip_shards, manifest.image_shards = clips.shards, images.shards
    manifest.rejected = {name: count for name, count in sorted(rejected.items()) if count}
    manifest.write(out_dir)
    return manifest


def _collect(sources: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            files += sorted(p for p in source.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES + IMAGE_SUFFIXES)
        elif source.is_file():
            files.append(source)
        else:
            raise InputError(f"{source} does not exist", field="sources", code="invalid_option")
    if not files:
        raise InputError("no videos or photos found", field="sources", code="invalid_option")
    return files


def _prepare_video(
    path: Path,
    analyzer: FaceAnalyzer,
    config: PrepareConfig,
    spread: float,
    writer: ShardWriter,
    rejected: Counter[str],
) -> dict[str, Any]:
    info = probe(path)
    detections = []
    for frame in iter_frames(path, info):
        faces = analyzer.detect(frame.image)
        for face in faces:
            analyzer.embed(frame.image, face)
        detections.append(faces)
    tracks = link_tracks(detections, distance_fn=analyzer.distance, max_gap=config.max_gap_frames)
    # (track id, first position, smoothed kps of the clip (T, 5, 2)) per planned clip, by first frame
    planned: list[tuple[Track, int, np.ndarray]] = []
    for track in tracks:
        kps = np.stack([f.kps for f in track.faces]).astype(np.float32)  # (T, 5, 2)
        if config.smoothing_sigma > 0 and len(kps) > 1:
            kps = gaussian_smooth(kps, config.smoothing_sigma)
        for start in _clip_starts(track, config):
            planned.append((track, start, kps[start : start + config.clip_frames]))
    wanted: dict[int, list[tuple[int, np.ndarray]]] = {}  # frame index -> [(clip number, affine)]
    for number, (track, start, kps) in enumerate(planned):
        for offset in range(config.clip_frames):
            affine = estimate_affine(kps[offset], config.resolution)
            wanted.setdefault(track.frames[start + offset], []).append((number, affine))
    # Second pass: crop; a clip is checked and written as soon as its last frame is in (bounded memory).
    crops: dict[int, list[np.ndarray]] = {}
    natives: dict[int, list[int]] = {}
    written = 0
    if wanted:
        for frame in iter_frames(path, info):
            for number, affine in wanted.get(frame.index, []):
                crops.setdefault(number, []).append(warp_face(frame.image, affine, config.resolution))
                natives.setdefault(number, []).append(native_size(affine, config.resolution))
                if len(crops[number]) == config.clip_frames:
                    track, start, _ = planned[number]
                    reason = _write_clip(
                        path,
                        info.fps,
                        track,
                        start,
                        crops.pop(number),
                        natives.pop(number),
                        analyzer,
                        config,
                        spread,
                        writer,
                    )
                    if reason is None:
                        written += 1
                    else:
                        rejected[reason] += 1
    return {"kind": "video", "frames": len(detections), "tracks": len(tracks), "clips": written}


def _write_clip(
    path: Path,
    fps: Fraction,
    track: Track,
    start: int,
    crops: list[np.ndarray],
    natives: list[int],
    analyzer: FaceAnalyzer,
    config: PrepareConfig,
    spread: float,
    writer: ShardWriter,
) -> str | None:
    """Write one clip if it passes the filters; else the name of the filter that removed it."""
    faces = track.faces[start : start + config.clip_frames]
    embeddings = np.stack([np.asarray(f.embedding, np.float32) for f in faces])  # (T, D); detected faces: all embedded
    mean = embeddings.mean(axis=0)  # (D,)
    if config.min_face_px and min(natives) < config.min_face_px:
        return "face_size"
    if float(np.mean([sharpness(c) for c in crops])) < config.min_sharpness:
        return "sharpness"
    if max(analyzer.distance(e, mean) for e in embeddings) > spread:
        return "identity_consistency"
    frames = track.frames[start : start + config.clip_frames]
    metadata = {
        "kind": "clip",
        "source": path.name,
        "track": track.id,
        "frames": frames,
        "fps": float(fps),
        "native_face_px": natives,
        "embeddings": embeddings.round(6).tolist(),
    }
    writer.write(f"{_slug(path)}_t{track.id:03d}_f{frames[0]:06d}", metadata, crops)
    return None


def _clip_starts(track: Track, config: PrepareConfig) -> list[int]:
    """First positions of the clips of ``track``: windows of detected, consecutive frames."""
    stride = config.clip_stride or config.clip_frames
    starts: list[int] = []
    position = 0
    while position + config.clip_frames <= len(track) and len(starts) < config.max_clips_per_track:
        window = slice(position, position + config.clip_frames)
        consecutive = track.frames[window.stop - 1] - track.frames[position] == config.clip_frames - 1
        if consecutive and not any(track.interpolated[window]):
            starts.append(position)
            position += stride
        else:
            position += 1
    return starts


def _prepare_image(
    path: Path, analyzer: FaceAnalyzer, config: PrepareConfig, writer: ShardWriter, rejected: Counter[str]
) -> dict[str, Any]:
    image = read_image(path)
    detected = analyzer.detect(image)
    faces = [f for f in detected if f.score >= analyzer.confident_score]  # a photo's false positives stay out
    rejected["low_score"] += len(detected) - len(faces)
    if not faces:
        rejected["no_face"] += 1
        return {"kind": "image", "faces": 0, "images": 0}
    written = 0
    for number, face in enumerate(faces):
        analyzer.embed(image, face)
        affine = estimate_affine(face.kps, config.resolution)
        crop = warp_face(image, affine, config.resolution)
        face_px = native_size(affine, config.resolution)
        if config.min_face_px and face_px < config.min_face_px:
            rejected["face_size"] += 1
            continue
        if sharpness(crop) < config.min_sharpness:
            rejected["sharpness"] += 1
            continue
        metadata = {
            "kind": "image",
            "source": path.name,
            "face": number,
            "native_face_px": [face_px],
            "embeddings": [np.asarray(face.embedding, np.float32).round(6).tolist()],
        }
        writer.write(f"{_slug(path)}_face{number:02d}", metadata, [crop])
        written += 1
    return {"kind": "image", "faces": len(faces), "images": written}


def prepare_identity(
    photos: Sequence[Path], out_dir: Path, analyzer: FaceAnalyzer, config: PrepareConfig, *, backend_name: str = ""
) -> Manifest:
    """One person's photos into identity images (``images-*.tar``) for stage ``identity``.

    Each photo gives its largest confident face. A photo is refused, by name, when it has no such
    face, when that face is smaller than ``min_face_px``, or when it is of somebody else: farther
    than the analyzer's match threshold from the mean of the other photos' faces.
    """
    config = config.validate()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chosen = []  # (path, image, face)
    for index, path in enumerate(map(Path, photos)):
        image = read_image(path)
        faces = [f for f in analyzer.detect(image) if f.score >= analyzer.confident_score]
        if not faces:
            raise InputError(
                f"photo {index} ({path.name}) shows no face clearly enough", field="photos", code="no_face_in_reference"
            )
        face = max(faces, key=lambda f: float((f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1])))
        analyzer.embed(image, face)
        chosen.append((path, image, face))
    embeddings = np.stack([np.asarray(face.embedding, np.float32) for _, _, face in chosen])  # (P, D)
    if len(chosen) > 1:
        for index, (path, _, _) in enumerate(chosen):
            others = np.delete(embeddings, index, axis=0).mean(axis=0)  # (D,)
            distance = analyzer.distance(embeddings[index], others)
            if distance > analyzer.match_threshold:
                raise InputError(
                    f"photo {index} ({path.name}) shows another person than the others (distance "
                    f"{distance:.3f} > {analyzer.match_threshold})",
                    field="photos",
                    code="invalid_reference",
                )
    manifest = Manifest(
        config=asdict(config), face_backend=backend_name, embedding_dim=analyzer.embedding_dim, metric=analyzer.metric
    )
    images = ShardWriter(out_dir, "images", max_samples=config.shard_samples)
    try:
        for index, (path, image, face) in enumerate(chosen):
            affine = estimate_affine(face.kps, config.resolution)
            face_px = native_size(affine, config.resolution)
            if config.min_face_px and face_px < config.min_face_px:
                raise InputError(
                    f"photo {index} ({path.name}): the face is {face_px} px, under {config.min_face_px:g}",
                    field="photos",
                    code="invalid_reference",
                )
            metadata = {
                "kind": "image",
                "source": path.name,
                "face": 0,
                "native_face_px": [face_px],
                "embeddings": [embeddings[index].round(6).tolist()],
            }
            images.write(f"photo{index:03d}_{_slug(path)}", metadata, [warp_face(image, affine, config.resolution)])
            manifest.sources[path.name] = {"kind": "image", "faces": 1, "images": 1}
    finally:
        images.close()
    manifest.images, manifest.image_shards = images.samples, images.shards
    manifest.write(out_dir)
    return manifest


def _slug(path: Path) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in path.stem)[:64] or "source"
