"""restore_video: the whole job on one machine, as a plain function of a loaded :class:`Restorer`.

Two streaming passes over the input, so memory stays bounded whatever the video's length:

1. **Analyze.** Decode every frame, detect faces and embed them. Only boxes, landmarks and
   embeddings are kept (a few hundred bytes per face). Link detections into tracks, pick the
   track(s) to restore (the reference's identity, or every face), and smooth their landmarks with
   an offline, zero-lag Gaussian over time (see ``faces/smoothing.py`` for why).
2. **Restore.** Decode again; align each selected face to the FFHQ template, stream the crops of
   each track through an engine session clip by clip, paste the restored crops back, and encode.
   Frames wait in a short queue until every face in them has come back from its engine session,
   which bounds memory by the engine's clip length, not by the video.

Frames without a selected face are written unchanged. The report records, per frame, the faces
found and the identity distance to the reference before and after restoration.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ipfvr_core import __version__
from ipfvr_core.engines import DEFAULT_ENGINE
from ipfvr_core.engines.base import CancelFn, CropNote, Engine, EngineSession, IdentityCondition, check_canceled
from ipfvr_core.errors import InputError, OutputError
from ipfvr_core.faces.align import estimate_affine, native_size, warp_face
from ipfvr_core.faces.base import Face, FaceAnalyzer
from ipfvr_core.faces.paste import paste_back
from ipfvr_core.faces.smoothing import gaussian_smooth
from ipfvr_core.faces.tracks import (
    Track,
    bbox_iou,
    faces_to_embed,
    link_tracks,
    select_tracks,
    track_identity_distance,
)
from ipfvr_core.identity import ReferenceSet, distance_to_references, encode_references, summarize
from ipfvr_core.upscale import (
    BackgroundUpscaler, bicubic_upscale, check_output_size, check_upscale_options, upscaled_affine, upscaled_points,
)
from ipfvr_core.video_io import VideoFrame, VideoInfo, VideoLimits, VideoWriter, check_output_path, iter_frames, probe

FaceMode = Literal["target", "all"]


@dataclass(frozen=True)
class RestoreOptions:
    """Per-job choices. Everything model-related lives in the engine's own config."""

    faces: FaceMode = "target"  # restore the reference's person only, or every face
    face_size: int | None = None  # aligned crop side; None = the engine's native face_size
    smoothing_sigma: float = 3.0  # zero-lag Gaussian landmark smoothing over time, in frames (0 = off)
    target_max_distance: float | None = None  # max identity distance for the target track; None = analyzer default
    min_track_frames: int = 5  # shorter tracks are detector noise and stay untouched
    min_track_score: float | None = None  # ignore tracks whose best detection scores below this (detector scale)
    target_margin: float = 0.1  # with several faces on screen, the target must be this much closer than the rest
    max_gap_frames: int = 20  # detector misses up to this long are bridged by interpolation
    crf: int = 18  # x264 constant rate factor of the output (0-51, lower = better)
    preset: str = "medium"  # x264 preset
    limits: VideoLimits = field(default_factory=VideoLimits)  # refuse inputs above these
    reference_max_pixels: int = 40_000_000  # refuse reference images above this many pixels
    compare_path: str | Path | None = None  # also write input|output side by side here
    prompt: str | None = None  # text describing the face (engines that use text)
    negative_prompt: str | None = None  # user negative stream (engines that use text)
    guidance: float | None = None  # total negative-guidance weight (engines that use guidance); None = engine's
    seed: int | None = None  # makes stochastic engines reproducible
    upscale: int = 1  # output size factor for the whole frame: 1, 2 or 4 (faces are pasted at that scale)
    background: str = "realesrgan"  # how the frame around the faces is upscaled: "realesrgan" (tiled) or "bicubic"
    identity: str | None = None  # per-identity module to condition on (ipfvr: LoRA psi_id <lora_folder>/<name>)
    # Identity embeddings (the slowest analysis step) on every k-th frame, plus the faces where tracks start
    # or could swap (faces.tracks.faces_to_embed); the report's before/after distances are measured on the
    # faces embedded (identity.frames_measured). 1 = every face of every frame. With the default backend, 4
    # restores the same frames with the same identity means as 1 (carphone: 120/120; pipeline_bench's 720p
    # clip: 200/200), at 0.100 instead of 0.056 x plain decode+encode; on dlib HOG's fragmented detections
    # of that clip, sampling restored fewer frames (122 instead of 156).
    embed_every: int = 4

    def validate(self) -> None:
        if self.faces not in ("target", "all"):
            raise InputError(f"must be 'target' or 'all', got {self.faces!r}", field="faces", code="invalid_option")
        if self.face_size is not None and not (64 <= self.face_size <= 2048):
            raise InputError("must be between 64 and 2048", field="face_size", code="invalid_option")
        if not (0 <= self.crf <= 51):
            raise InputError("must be between 0 and 51", field="crf", code="invalid_option")
        if self.guidance is not None and not (0 <= self.guidance <= 30):
            raise InputError("must be between 0 and 30", field="guidance", code="invalid_option")
        if self.smoothing_sigma < 0:
            raise InputError("must be >= 0", field="smoothing_sigma", code="invalid_option")
        check_upscale_options(self.upscale, self.background)
        if isinstance(self.embed_every, bool) or not isinstance(self.embed_every, int) or not (
                1 <= self.embed_every <= 1000):
            raise InputError("must be an integer between 1 and 1000", field="embed_every", code="invalid_option")


@dataclass
class ProgressEvent:
    """What the job is doing now. ``fraction`` is overall progress in [0, 1]."""

    stage: str  # "references" | "analyze" | "restore" | "done"
    current: int  # units done in this stage (frames)
    total: int  # units in this stage
    fraction: float  # overall, across stages


ProgressCallback = Callable[[ProgressEvent], None]

_RECENT_FRAMES = 3  # frames whose face boxes tell a face that continues a track from one that starts one

# Share of overall progress given to each stage (the engine dominates the restore stage).
_STAGE_SPAN = {"references": (0.0, 0.02), "analyze": (0.02, 0.2), "restore": (0.2, 1.0)}


class _Timer:
    """Accumulates wall time per stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def add(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] += now - since
        return now


@dataclass
class _Pending:
    """A decoded frame waiting for its faces to come back from the engine."""

    frame: VideoFrame
    items: list[tuple[int, np.ndarray, Face]]  # (track id, affine (2, 3), face) per selected face


def _even(n: int) -> int:
    return n + (n % 2)


@functools.lru_cache(maxsize=4)
def _label_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def label(image: np.ndarray, text: str) -> np.ndarray:
    """A copy of ``image`` (H, W, 3) with ``text`` in its top-left corner, white on a dark box."""
    h, w = image.shape[:2]
    font = _label_font(max(9, round(min(h, w) / 14)))
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    pad = max(2, round(min(h, w) / 80))
    x0, y0, x1, y1 = draw.textbbox((pad * 2, pad * 2), text, font=font)
    draw.rectangle((x0 - pad, y0 - pad, x1 + pad, y1 + pad), fill=(0, 0, 0))
    draw.text((pad * 2, pad * 2), text, font=font, fill=(255, 255, 255))
    return np.asarray(canvas)


def _pad_even(image: np.ndarray) -> np.ndarray:
    """yuv420p needs even sides: replicate the last row/column when a side is odd."""
    h, w = image.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return image
    return np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")  # (H', W', 3)


class Restorer:
    """A face analyzer and an engine, loaded once and reused for many videos."""

    def __init__(self, analyzer: FaceAnalyzer, engine: Engine) -> None:
        engine.check_face_backend(analyzer)
        self.analyzer = analyzer
        self.engine = engine
        self._x4plus = None  # Real-ESRGAN x4plus for upscaled backgrounds, loaded on first use (non-baseline engines)

    @classmethod
    def load(
        cls,
        engine: str = DEFAULT_ENGINE,
        weights: str | Path | None = None,
        face_backend: str = "auto",
        insightface_dir: str | Path | None = None,
        device: str = "cpu",
        dtype: str | None = None,
    ) -> Restorer:
        """Load the face analyzer and the named engine (slow: reads model weights)."""
        from ipfvr_core.engines import load_engine
        from ipfvr_core.faces.loader import load_analyzer

        analyzer = load_analyzer(face_backend, insightface_dir=insightface_dir)
        return cls(analyzer, load_engine(engine, weights=weights, device=device, dtype=dtype))

    def versions(self) -> dict[str, str]:
        import av
        import torch

        return {
            "ipfvr_core": __version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "av": av.__version__,
            "numpy": np.__version__,
            "face_backend": self.analyzer.name,
            **{f"engine_{k}" if k != "engine" else k: v for k, v in self.engine.versions().items()},
        }

    # ------------------------------------------------------------------ the job
    def restore(
        self,
        input_path: str | Path,
        references: Sequence[str | Path | bytes],
        output_path: str | Path,
        options: RestoreOptions | None = None,
        progress: ProgressCallback | None = None,
        should_cancel: CancelFn | None = None,
    ) -> dict:
        """Restore ``input_path`` into ``output_path``; return the JSON-serialisable report.

        Raises InputError (bad video/reference/option), OutputError, Canceled. Nothing is left
        at ``output_path`` (or the compare path) unless the whole job succeeded.
        """
        options = options or RestoreOptions()
        options.validate()
        self.engine.use_identity(options.identity)  # every job sets it: none stays from the previous job
        timer = _Timer()
        t_start = time.perf_counter()
        output_path = check_output_path(output_path, field="output")
        compare_path = check_output_path(options.compare_path, field="compare") if options.compare_path else None
        face_size = options.face_size or self.engine.face_size

        def report_progress(stage: str, current: int, total: int) -> None:
            if progress is None:
                return
            lo, hi = _STAGE_SPAN[stage]
            frac = lo + (hi - lo) * (current / total if total else 1.0)
            progress(ProgressEvent(stage=stage, current=current, total=total, fraction=round(frac, 4)))

        # 1. Probe the input first: it is the cheapest thing to reject.
        t = time.perf_counter()
        info = probe(input_path, options.limits)
        check_output_size(info.width, info.height, options.upscale, options.limits)
        t = timer.add("probe", t)

        # 2. References → identity.
        report_progress("references", 0, len(references))
        refs = encode_references(
            self.analyzer, references, aligned_size=face_size, max_pixels=options.reference_max_pixels
        )
        t = timer.add("references", t)
        report_progress("references", len(references), len(references))

        # 3. Analyze pass: detect + embed, link tracks, select, smooth.
        detections, timer_split = self._analyze(input_path, info, options.embed_every, report_progress,
                                                should_cancel)
        for k, v in timer_split.items():
            timer.seconds[k] += v
        t = time.perf_counter()
        tracks = link_tracks(detections, distance_fn=self.analyzer.distance, max_gap=options.max_gap_frames)
        threshold = options.target_max_distance or _default_target_distance(self.analyzer)
        warnings: list[str] = list(self.engine.warnings)
        selected = self._select(tracks, refs, threshold, options, warnings)
        smoothed = {tr.id: _smooth(tr, options.smoothing_sigma) for tr in selected}
        t = timer.add("tracks", t)

        # 4. Restore pass.
        frames_report = self._restore_pass(
            input_path,
            info,
            output_path,
            compare_path,
            detections,
            selected,
            smoothed,
            refs,
            face_size,
            options,
            timer,
            report_progress,
            should_cancel,
        )

        # 5. Report.
        before = [d for fr in frames_report for d in fr["distance_before_restored"]]
        after = [d for fr in frames_report for d in fr["distance_after"]]
        total_s = time.perf_counter() - t_start
        out_info = probe(output_path, options.limits)
        report = {
            "input": _video_summary(info, input_path),
            "output": _video_summary(out_info, output_path),
            "compare": str(compare_path) if compare_path else None,
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
            "references": [
                {
                    "name": r.name,
                    "faces_found": r.faces_found,
                    "distance_to_other_references": refs.consistency[i] if refs.consistency else None,
                }
                for i, r in enumerate(refs.references)
            ],
            "identity": {
                "metric": refs.metric,
                "same_person_threshold": refs.threshold,
                "target_max_distance": threshold,
                "before": summarize(before),
                "after": summarize(after),
                "mean_improvement": (
                    round(float(np.mean(before) - np.mean(after)), 4) if before and after else None
                ),
                "embed_every": options.embed_every,  # sampling of the analysis and of before/after
                "frames_measured": sum(1 for fr in frames_report if fr["distance_after"]),
            },
            "tracks": [
                {
                    "id": tr.id,
                    "first_frame": tr.frames[0],
                    "last_frame": tr.frames[-1],
                    "frames": len(tr.frames),
                    "restored": any(tr.id == s.id for s in selected),
                }
                for tr in tracks
            ],
            "frames": frames_report,
            "frames_total": len(frames_report),
            "frames_with_faces": sum(1 for fr in frames_report if fr["faces"]),
            "frames_restored": sum(1 for fr in frames_report if fr["restored"]),
            "timings_s": {k: round(v, 3) for k, v in {**timer.seconds, "total": total_s}.items()},
            "fps": round(len(frames_report) / total_s, 3) if total_s > 0 else None,
            "versions": self.versions(),
            "warnings": warnings,
        }
        report_progress("restore", len(frames_report), len(frames_report))
        return report

    def _select(self, tracks: list[Track], refs: ReferenceSet, threshold: float, options: RestoreOptions,
                warnings: list[str]) -> list[Track]:
        """The tracks to restore.

        With ``faces="target"``, tracks whose identity is within ``threshold`` of the references,
        closest first. Heavy degradation can push even the right person past any threshold
        (carphone_distorted: dlib L2 ~0.7 to its own clean frame, astronaut-like ~0.8), so when
        nothing is within it and the video never shows two faces at once, the one person on
        screen is taken as the target, with a warning in the report. With two or more faces at
        once and no match, the job is refused: restoring the wrong person is worse than nothing.
        """
        if not tracks:
            warnings.append("no face was found in the video; frames were copied unchanged")
            return []
        # Short tracks are detector noise; left in, one lucky frame could outrank a long track.
        # (A clip shorter than twice the minimum lowers it, or nothing could ever qualify.)
        frames_seen = max(t.end for t in tracks) + 1
        min_len = max(1, min(options.min_track_frames, frames_seen // 2))
        long_enough = [t for t in tracks if len(t) >= min_len and _clears(t, options.min_track_score)]
        if not long_enough:
            warnings.append(f"faces were detected only in isolated frames (no track of {min_len}+ frames); "
                            "frames were copied unchanged")
            return []
        floor = self.analyzer.track_score
        steady = [t for t in long_enough if floor is None or _median_score(t) >= floor]
        if not steady:
            warnings.append(f"only weak detections were found (no track's median face score reaches {floor}); "
                            "frames were copied unchanged")
            return []
        long_enough = steady
        selected = select_tracks(
            long_enough, refs.embeddings, self.analyzer.distance, threshold, options.faces, min_length=min_len
        )
        if options.faces == "all":
            return selected
        refs_arr = np.stack(refs.embeddings)  # (R, D)
        dist = {t.id: track_identity_distance(t, refs_arr, self.analyzer.distance) for t in long_enough}
        for chosen in selected:
            rivals = [dist[t.id] for t in long_enough if t.id != chosen.id and dist[t.id] is not None
                      and _other_face_at_same_time(t, chosen)]
            if rivals and min(rivals) - dist[chosen.id] < options.target_margin:
                raise InputError(
                    f"the reference does not single out one face: the closest is at identity distance "
                    f"{dist[chosen.id]:.3f} and another face on screen at the same time at {min(rivals):.3f} "
                    f"(margin needed {options.target_margin}); use a clearer reference, or faces='all'",
                    field="reference",
                    code="target_not_found",
                )
        if selected:
            return selected
        best = min((d for d in dist.values() if d is not None), default=float("inf"))
        # Fallback: one face dominates the video. A track's evidence is the sum over its detections
        # of how far each score clears the weakest detection in the video (long, confident tracks
        # win; the low-score false hits that a recall-oriented detector makes do not). If the
        # strongest track has at least twice the evidence of any other face on screen with it,
        # take it, and tracks at other times (the person leaving and coming back), strongest
        # first, never two at once.
        floor = min((f.score for t in long_enough for f in _detected(t)), default=0.0)

        def evidence(t: Track) -> float:
            return sum(f.score - floor for f in _detected(t))

        ranked = sorted(long_enough, key=evidence, reverse=True)
        if ranked and all(evidence(ranked[0]) >= 2 * evidence(t) for t in ranked[1:]
                          if _other_face_at_same_time(t, ranked[0])):
            picked: list[Track] = []
            for t in ranked:
                if not any(t.overlaps(c) for c in picked):
                    picked.append(t)
            warnings.append(
                f"identity not verified: the closest face is at distance {best:.3f} from the reference "
                f"(limit {threshold:.3f}); one face dominates the video, so it was restored as the target"
            )
            return sorted(picked, key=lambda t: t.start)
        raise InputError(
            f"no face in the video matches the reference (closest identity distance {best:.3f}, "
            f"limit {threshold:.3f}); use a reference of a person in the video, or faces='all'",
            field="reference",
            code="target_not_found",
        )

    # ------------------------------------------------------------------ pass 1
    def _analyze(
        self,
        input_path: str | Path,
        info: VideoInfo,
        embed_every: int,
        report_progress: Callable[[str, int, int], None],
        should_cancel: CancelFn | None,
    ) -> tuple[list[list[Face]], dict[str, float]]:
        timer = _Timer()
        detections: list[list[Face]] = []
        t = time.perf_counter()
        recent: deque[np.ndarray] = deque(maxlen=_RECENT_FRAMES)  # (F_i, 4) face boxes of the last frames
        for vf in iter_frames(input_path, info):
            t = timer.add("decode", t)
            check_canceled(should_cancel)
            faces = self.analyzer.detect(vf.image)
            t = timer.add("detect", t)
            boxes = np.array([f.bbox for f in faces], dtype=np.float64).reshape(-1, 4)  # (F, 4)
            for i in faces_to_embed(boxes, np.concatenate([*recent, np.zeros((0, 4))]),
                                    sampled=vf.index % embed_every == 0):
                self.analyzer.embed(vf.image, faces[i])
            recent.append(boxes)
            t = timer.add("embed", t)
            detections.append(faces)
            if vf.index % 8 == 0:
                report_progress("analyze", vf.index + 1, info.frame_count)
        if not detections:
            raise InputError("the video has no decodable frames", field="video", code="empty_video")
        report_progress("analyze", len(detections), len(detections))
        return detections, timer.seconds

    # ------------------------------------------------------------------ pass 2
    def _background_upscaler(self, options: RestoreOptions) -> BackgroundUpscaler | None:
        """None at x1 (nothing is loaded or done); else the upscaler, on the baseline engine's own network
        when that engine is loaded, or on an x4plus network loaded once per Restorer."""
        if options.upscale == 1:
            return None
        if options.background == "bicubic":
            return BackgroundUpscaler(options.upscale, "bicubic")
        from ipfvr_core.engines.baseline import BaselineEngine
        from ipfvr_core.engines.reference import ReferenceEngine

        if isinstance(self.engine, (BaselineEngine, ReferenceEngine)) and self.engine.model is not None:
            return BackgroundUpscaler(options.upscale, "realesrgan", model=self.engine.model)
        if self._x4plus is None:
            import torch

            from ipfvr_core.engines.ncnn_weights import load_realesrgan_x4plus

            device = torch.device(getattr(self.engine, "device", "cpu"))
            dtype = torch.float16 if device.type == "cuda" else torch.float32
            self._x4plus = load_realesrgan_x4plus(device, dtype)
        return BackgroundUpscaler(options.upscale, "realesrgan", model=self._x4plus)

    def _restore_pass(
        self,
        input_path: str | Path,
        info: VideoInfo,
        output_path: Path,
        compare_path: Path | None,
        detections: list[list[Face]],
        selected: list[Track],
        smoothed: dict[int, np.ndarray],
        refs: ReferenceSet,
        face_size: int,
        options: RestoreOptions,
        timer: _Timer,
        report_progress: Callable[[str, int, int], None],
        should_cancel: CancelFn | None,
    ) -> list[dict]:
        engine = self.engine
        identity = IdentityCondition(
            embeddings=refs.embeddings,
            metric=refs.metric,
            aligned_references=[r.aligned for r in refs.references],
            attributes=_merge_attributes(refs),
            prompt=options.prompt,
            negative_prompt=options.negative_prompt,
            guidance_scale=options.guidance,
        )
        # frame index → [(track id, position in track)]
        at_frame: dict[int, list[tuple[int, int]]] = defaultdict(list)
        last_frame: dict[int, int] = {}
        faces_of: dict[int, list[Face]] = {}
        for tr in selected:
            for pos, fi in enumerate(tr.frames):
                at_frame[fi].append((tr.id, pos))
            last_frame[tr.id] = tr.frames[-1]
            faces_of[tr.id] = tr.faces

        sessions: dict[int, EngineSession] = {}
        inbox: dict[int, list[np.ndarray]] = defaultdict(list)  # crops not yet pushed, per track
        natives: dict[int, list[int]] = defaultdict(list)
        outbox: dict[int, deque[np.ndarray]] = defaultdict(deque)  # restored crops not yet pasted
        notes: dict[int, deque[CropNote | None]] = defaultdict(deque)  # the engine's note on each outbox crop
        pending: deque[_Pending] = deque()
        frames_report: list[dict] = []
        total = len(detections)
        scale = options.upscale
        upscaler = self._background_upscaler(options)

        def push(tid: int, *, final: bool) -> None:
            t0 = time.perf_counter()
            if tid not in sessions:
                sessions[tid] = engine.open_session(identity, seed=options.seed)
            if inbox[tid]:
                clip = np.stack(inbox[tid])  # (T, S, S, 3)
                native = int(np.median(natives[tid]))
                restored = sessions[tid].push(clip, native_size=native, should_cancel=should_cancel)
                outbox[tid].extend(restored)
                notes[tid].extend(sessions[tid].crop_notes(len(restored)))
                inbox[tid].clear()
                natives[tid].clear()
            if final:
                session = sessions.pop(tid)
                restored = session.flush(should_cancel=should_cancel)
                outbox[tid].extend(restored)
                notes[tid].extend(session.crop_notes(len(restored)))
            timer.add("engine", t0)

        def drain(writer: VideoWriter, compare: VideoWriter | None) -> None:
            while pending and all(outbox[tid] for tid, _, _ in pending[0].items):
                p = pending.popleft()
                t0 = time.perf_counter()
                out = p.frame.image
                if upscaler is not None:
                    out = upscaler.upscale(out)  # (sH, sW, 3)
                    t0 = timer.add("upscale", t0)
                restored_faces: list[Face] = []
                transfers: list[dict | None] = []
                for tid, affine, face in p.items:
                    crop = outbox[tid].popleft()
                    transfers.append(_transfer_report(notes[tid].popleft(), refs))
                    out = paste_back(out, crop, upscaled_affine(affine, scale))
                    restored_faces.append(face)
                t0 = timer.add("paste", t0)
                # Identity before and after, on the same face geometry: the faces the analysis embedded, and
                # on every embed_every-th frame the bridged ones too (interpolated, never detected or embedded).
                before, after = [], []
                for face in restored_faces:
                    if face.embedding is None and p.frame.index % options.embed_every != 0:
                        continue
                    emb_in = face.embedding if face.embedding is not None else self.analyzer.embed(
                        p.frame.image, _geometry(face))
                    emb_out = self.analyzer.embed(out, _geometry(face, scale))
                    before.append(round(distance_to_references(self.analyzer, emb_in, refs), 4))
                    after.append(round(distance_to_references(self.analyzer, emb_out, refs), 4))
                t0 = timer.add("embed_output", t0)
                writer.write(_pad_even(out), pts=p.frame.pts)
                if compare is not None:
                    left = label(bicubic_upscale(p.frame.image, scale), "input")  # (sH, sW, 3)
                    right = label(out, f"restored \u00b7 {self.engine.name}")
                    compare.write(_pad_even(np.concatenate([left, right], axis=1)), pts=p.frame.pts)  # (sH, 2sW, 3)
                timer.add("encode", t0)
                dets = detections[p.frame.index]
                frames_report.append(
                    {
                        "index": p.frame.index,
                        "time_s": round(p.frame.time_s, 4),
                        "faces": len(dets),
                        "restored": len(restored_faces),
                        "distance_before": [
                            round(distance_to_references(self.analyzer, f.embedding, refs), 4)
                            for f in dets
                            if f.embedding is not None
                        ],
                        "distance_before_restored": before,
                        "distance_after": after,
                        "transfer": transfers,
                    }
                )
                done = len(frames_report)
                if done % 4 == 0 or done == total:
                    report_progress("restore", done, total)

        w, h = _even(scale * info.width), _even(scale * info.height)
        audio = input_path if info.has_audio else None
        with _open_writers(output_path, compare_path, w, h, info, options, audio) as (writer, compare):
            t = time.perf_counter()
            for vf in iter_frames(input_path, info):
                t = timer.add("decode", t)
                check_canceled(should_cancel)
                items: list[tuple[int, np.ndarray, Face]] = []
                for tid, pos in at_frame.get(vf.index, []):
                    affine = estimate_affine(smoothed[tid][pos], face_size)
                    inbox[tid].append(warp_face(vf.image, affine, face_size))
                    natives[tid].append(native_size(affine, face_size))
                    items.append((tid, affine, faces_of[tid][pos]))
                t = timer.add("align", t)
                pending.append(_Pending(vf, items))
                for tid, _ in at_frame.get(vf.index, []):
                    final = vf.index == last_frame[tid]
                    if final or len(inbox[tid]) >= engine.clip_length:
                        push(tid, final=final)
                drain(writer, compare)
                t = time.perf_counter()
            for tid in set(sessions) | {k for k, v in inbox.items() if v}:
                push(tid, final=True)
            drain(writer, compare)
            if pending:
                raise RuntimeError(f"engine {engine.name!r} returned fewer crops than it was given")
        return frames_report


class _open_writers:
    """Open the output (and the optional comparison) writer; both commit or neither does."""

    def __init__(self, output: Path, compare: Path | None, w: int, h: int, info: VideoInfo,
                 options: RestoreOptions, audio: str | Path | None) -> None:
        self._writer = VideoWriter(output, width=w, height=h, fps=info.fps, time_base=info.time_base,
                                   crf=options.crf, preset=options.preset, audio_from=audio)
        self._compare = (
            VideoWriter(compare, width=_even(2 * options.upscale * info.width), height=h, fps=info.fps,
                        time_base=info.time_base, crf=options.crf, preset=options.preset, audio_from=audio)
            if compare is not None else None
        )

    def __enter__(self) -> tuple[VideoWriter, VideoWriter | None]:
        self._writer.__enter__()
        if self._compare is not None:
            try:
                self._compare.__enter__()
            except BaseException as exc:
                self._writer.__exit__(type(exc), exc, exc.__traceback__)
                raise
        return self._writer, self._compare

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if self._compare is not None:
                self._compare.__exit__(exc_type, exc, tb)
        finally:
            self._writer.__exit__(exc_type, exc, tb)
        return False


def _geometry(face: Face, scale: int = 1) -> Face:
    """A copy of a face's box and landmarks only (embed() writes the embedding onto its argument),
    moved into the frame upscaled by ``scale``."""
    bbox = upscaled_points(face.bbox.reshape(2, 2), scale).reshape(4)  # (2, 2) corners -> (4,) x0, y0, x1, y1
    return Face(bbox=bbox.copy(), kps=upscaled_points(face.kps, scale).copy(), score=face.score)


def _smooth(track: Track, sigma: float) -> np.ndarray:
    kps = np.stack([f.kps for f in track.faces]).astype(np.float32)  # (T, 5, 2)
    return gaussian_smooth(kps, sigma) if sigma > 0 and len(kps) > 1 else kps


def _default_target_distance(analyzer: FaceAnalyzer) -> float:
    # Degradation alone moves a face far from its clean self (carphone: dlib L2 ~0.72 against a
    # pristine frame, above dlib's 0.6 same-person threshold), so the target gate is looser than
    # the analyzer's same-person threshold. With several people, the closest track still wins.
    return analyzer.match_threshold * 1.25


def _clears(track: Track, min_score: float | None) -> bool:
    """Whether the track's best real detection reaches ``min_score`` (always, when it is None)."""
    if min_score is None:
        return True
    return max((f.score for f in _detected(track)), default=float("-inf")) >= min_score


def _median_score(track: Track) -> float:
    """Median score of the track's real detections."""
    return float(np.median([f.score for f in _detected(track)]))


def _detected(track: Track) -> list[Face]:
    """The faces the detector found (not the ones bridged by interpolation)."""
    return [f for f, bridged in zip(track.faces, track.interpolated, strict=True) if not bridged]


def _other_face_at_same_time(a: Track, b: Track) -> bool:
    """Whether ``a`` is another face on screen with ``b``: they share frames with boxes apart.

    Two tracks whose boxes overlap in most shared frames are duplicate detections of one face.
    """
    shared = sorted(set(a.frames) & set(b.frames))
    if not shared:
        return False
    ia, ib = {f: i for i, f in enumerate(a.frames)}, {f: i for i, f in enumerate(b.frames)}
    apart = sum(bbox_iou(a.faces[ia[f]].bbox, b.faces[ib[f]].bbox) == 0.0 for f in shared)
    return apart > len(shared) / 2


def _transfer_report(note: CropNote | None, refs: ReferenceSet) -> dict | None:
    """One restored face's reference transfer, for the report: which photo, how confident (None: no notes)."""
    if note is None:
        return None
    name = refs.references[note.reference].name if note.reference is not None else None
    return {"reference": name, "confidence": note.confidence}


def _merge_attributes(refs: ReferenceSet) -> dict[str, object]:
    merged: dict[str, object] = {}
    for r in refs.references:
        for k, v in r.face.attributes.items():
            merged.setdefault(k, v)
    return merged


def _video_summary(info: VideoInfo, path: str | Path) -> dict:
    return {
        "path": str(path),
        "width": info.width,
        "height": info.height,
        "fps": float(info.fps),
        "frames": info.frame_count,
        "duration_s": round(info.duration_s, 4),
        "has_audio": info.has_audio,
        "codec": info.codec,
    }


def write_report(report: dict, path: str | Path) -> Path:
    """Write the report as JSON atomically (temp file + rename)."""
    path = Path(path)
    if not path.parent.is_dir() or not os.access(path.parent, os.W_OK) or path.is_dir():
        raise OutputError(f"cannot write {path}: its folder does not exist or is not writable", field="report")
    # Created with mode 0666 so that the umask decides (mkstemp would make it 0600).
    tmp = path.parent / f".report-{uuid.uuid4().hex[:12]}.json"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "w") as fh:
            json.dump(report, fh, indent=2)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {exc.strerror}", field="report") from exc
    return path
