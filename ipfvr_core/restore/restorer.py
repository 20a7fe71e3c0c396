"""The :class:`Restorer`: a face analyzer and an engine, loaded once, restoring one video per call.

Two streaming passes over the input, so memory stays bounded whatever the video's length:

1. **Analyze** (``analysis``). Decode every frame, detect faces and embed them. Link detections
   into tracks, pick the track(s) to restore (``faces.targets``: the reference's identity, or
   every face), and smooth their landmarks with an offline, zero-lag Gaussian over time (see
   ``faces/smoothing.py`` for why).
2. **Restore** (``streamer``, ``output``). Decode again; align each selected face to the FFHQ
   template, stream the crops of each track through an engine session clip by clip, paste the
   restored crops back, and encode.

Frames without a selected face are written unchanged. The report (``ipfvr_core.report``) records,
per frame, the faces found and the identity distance to the reference before and after restoration.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ipfvr_core import __version__
from ipfvr_core.engines import DEFAULT_ENGINE
from ipfvr_core.engines.base import CancelFn, Engine, IdentityCondition, check_canceled
from ipfvr_core.faces.base import FaceAnalyzer
from ipfvr_core.faces.smoothing import gaussian_smooth
from ipfvr_core.faces.targets import TargetRules, default_target_distance, select_targets
from ipfvr_core.faces.tracks import Track, link_tracks
from ipfvr_core.identity import ReferenceSet, encode_references
from ipfvr_core.options import RestoreOptions
from ipfvr_core.progress import ProgressCallback
from ipfvr_core.report import RestoreReport
from ipfvr_core.restore.analysis import analyze
from ipfvr_core.restore.output import FrameSink, OutputVideos
from ipfvr_core.restore.reporting import (
    FrameMeter,
    identity_summary,
    reference_summaries,
    track_summaries,
    video_summary,
)
from ipfvr_core.restore.stages import Stages
from ipfvr_core.restore.streamer import TrackStreamer
from ipfvr_core.upscale import BackgroundUpscaler, check_output_size
from ipfvr_core.video_io import check_output_path, iter_frames, probe

if TYPE_CHECKING:
    from ipfvr_core.engines.rrdbnet import RRDBNet


class Restorer:
    """A face analyzer and an engine, loaded once and reused for many videos."""

    def __init__(self, analyzer: FaceAnalyzer, engine: Engine) -> None:
        engine.check_face_backend(analyzer)
        self.analyzer = analyzer
        self.engine = engine
        self._x4plus: RRDBNet | None = (
            None  # Real-ESRGAN x4plus for upscaled backgrounds, loaded on first use (non-baseline engines)
        )

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

    def restore(
        self,
        input_path: str | Path,
        references: Sequence[str | Path | bytes],
        output_path: str | Path,
        options: RestoreOptions | None = None,
        progress: ProgressCallback | None = None,
        should_cancel: CancelFn | None = None,
    ) -> RestoreReport:
        """Restore ``input_path`` into ``output_path``; return the report.

        Raises InputError (bad video/reference/option), OutputError, Canceled. Nothing is left
        at ``output_path`` (or the compare path) unless the whole job succeeded.
        """
        options = options or RestoreOptions()
        options.validate()
        self.engine.use_identity(options.identity)  # every job sets it: none stays from the previous job
        stages = Stages(progress)
        t_start = time.perf_counter()
        output_path = check_output_path(output_path, field="output")
        compare_path = check_output_path(options.compare_path, field="compare") if options.compare_path else None
        face_size = options.face_size or self.engine.face_size

        # 1. Probe the input first: it is the cheapest thing to reject.
        t = time.perf_counter()
        info = probe(input_path, options.limits)
        check_output_size(info.width, info.height, options.upscale, options.limits)
        t = stages.add("probe", t)

        # 2. References → identity.
        stages.report("references", 0, len(references))
        refs = encode_references(
            self.analyzer, references, aligned_size=face_size, max_pixels=options.reference_max_pixels
        )
        stages.add("references", t)
        stages.report("references", len(references), len(references))

        # 3. Analyze pass: detect + embed, link tracks, select, smooth.
        detections = analyze(self.analyzer, input_path, info, options.embed_every, stages, should_cancel)
        t = time.perf_counter()
        tracks = link_tracks(detections, distance_fn=self.analyzer.distance, max_gap=options.max_gap_frames)
        threshold = options.target_max_distance or default_target_distance(self.analyzer)
        rules = TargetRules(
            faces=options.faces,
            max_distance=threshold,
            min_track_frames=options.min_track_frames,
            min_track_score=options.min_track_score,
            margin=options.target_margin,
        )
        selection = select_targets(tracks, refs.embeddings, self.analyzer, rules)
        warnings = [*self.engine.warnings, *([selection.warning] if selection.warning else [])]
        landmarks = {tr.id: _smooth(tr, options.smoothing_sigma) for tr in selection.tracks}
        stages.add("tracks", t)

        # 4. Restore pass: decode again, stream the selected faces through the engine, paste them back, encode.
        streamer = TrackStreamer(
            self.engine,
            self._identity_condition(refs, options),
            selection.tracks,
            landmarks,
            face_size,
            seed=options.seed,
            stages=stages,
            should_cancel=should_cancel,
        )
        meter = FrameMeter(self.analyzer, refs, options.embed_every, options.upscale)
        upscaler = self._background_upscaler(options)
        audio = input_path if info.has_audio else None
        with OutputVideos(output_path, compare_path, info, options, self.engine.name, audio) as videos:
            sink = FrameSink(videos, meter, upscaler, options.upscale, detections, stages)
            t = time.perf_counter()
            for vf in iter_frames(input_path, info):
                stages.add("decode", t)
                check_canceled(should_cancel)
                sink.write(streamer.add(vf))
                t = time.perf_counter()
            sink.write(streamer.finish())
        frames = sink.rows

        # 5. Report.
        total_s = time.perf_counter() - t_start
        stages.report("restore", len(frames), len(frames))
        return RestoreReport(
            input=video_summary(info, input_path),
            output=video_summary(probe(output_path, options.limits), output_path),
            compare=str(compare_path) if compare_path else None,
            options=options,
            references=reference_summaries(refs),
            identity=identity_summary(refs, threshold, frames, options.embed_every),
            tracks=track_summaries(tracks, selection.tracks),
            frames=frames,
            frames_total=len(frames),
            frames_with_faces=sum(1 for fr in frames if fr.faces),
            frames_restored=sum(1 for fr in frames if fr.restored),
            timings_s={k: round(v, 3) for k, v in {**stages.seconds, "total": total_s}.items()},
            fps=round(len(frames) / total_s, 3) if total_s > 0 else None,
            versions=self.versions(),
            warnings=warnings,
        )

    def _identity_condition(self, refs: ReferenceSet, options: RestoreOptions) -> IdentityCondition:
        """What the engine is told about the person, and the job's engine options."""
        attributes: dict[str, object] = {}
        for r in refs.references:
            for k, v in r.face.attributes.items():
                attributes.setdefault(k, v)
        return IdentityCondition(
            embeddings=refs.embeddings,
            metric=refs.metric,
            aligned_references=[r.aligned for r in refs.references],
            attributes=attributes,
            prompt=options.prompt,
            negative_prompt=options.negative_prompt,
            guidance_scale=options.guidance,
        )

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


def _smooth(track: Track, sigma: float) -> np.ndarray:
    kps = np.stack([f.kps for f in track.faces]).astype(np.float32)  # (T, 5, 2)
    return gaussian_smooth(kps, sigma) if sigma > 0 and len(kps) > 1 else kps
