"""Building the builtin suite's media: cut and re-degraded carphone clips, photos moved along camera paths.

:class:`SuiteBuilder` writes one suite into a folder, each shared piece (a cut video, a reference
photo) once, and checks that every video it writes decodes back to its frames.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ipfvr_core.errors import IPFVRError
from ipfvr_core.evaluation.metrics import psnr
from ipfvr_core.evaluation.recipes import (
    FACE_SIZE_PER_LANDMARK_SPAN,
    MEASURE_EVERY,
    MIN_WRITE_PSNR_DB,
    REFERENCE_CROP_FACES,
    STILL_FPS,
    SUITE_VERSION,
    WRITE_CRF,
    WRITE_PRESET,
    CarphoneRecipe,
    StillRecipe,
    source_path,
)


def face_size_px(kps: np.ndarray) -> float:
    """Face size in pixels from (5, 2) landmarks (eyes, nose, mouth corners); see FACE_SIZE_PER_LANDMARK_SPAN."""
    eyes = np.linalg.norm(kps[1] - kps[0])
    eye_to_mouth = np.linalg.norm((kps[3] + kps[4]) / 2 - (kps[0] + kps[1]) / 2)
    return float(FACE_SIZE_PER_LANDMARK_SPAN * (eyes + eye_to_mouth) / 2)


def read_frames(path: Path) -> tuple[np.ndarray, Fraction]:
    """(T, H, W, 3) uint8 frames and the frame rate of a video."""
    from ipfvr_core.video_io import iter_frames, probe

    info = probe(path)
    return np.stack([frame.image for frame in iter_frames(path, info)]), info.fps


@functools.lru_cache(maxsize=1)
def _dlib_analyzer() -> Any:
    """The dlib face analyzer, loaded once per process (loading its models takes seconds; detection is stateless)."""
    from ipfvr_core.faces.loader import load_analyzer

    return load_analyzer("dlib")


class SuiteBuilder:
    """Writes one suite into ``root``; shared media (cut videos, reference photos) are written once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._memo: dict[tuple[Any, ...], Any] = {}

    # -- shared pieces ---------------------------------------------------------------------

    def analyzer(self) -> Any:
        return _dlib_analyzer()

    def carphone(self, which: str) -> tuple[np.ndarray, Fraction]:
        if (which,) not in self._memo:
            self._memo[(which,)] = read_frames(source_path(f"carphone_{which}"))
        return self._memo[(which,)]

    def photo(self, name: str) -> np.ndarray:
        """(H, W, 3) uint8 RGB of a still source."""
        key = ("photo", name)
        if key not in self._memo:
            if name == "astronaut":
                from skimage import data

                image = data.astronaut()
            else:
                from PIL import Image

                with Image.open(source_path(name)) as opened:
                    image = np.asarray(opened.convert("RGB"))
            self._memo[key] = np.ascontiguousarray(image)
        return self._memo[key]

    def write_png(self, relative: str, image: np.ndarray) -> str:
        from PIL import Image

        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path, format="PNG")
        return relative

    def write_video(self, relative: str, frames: np.ndarray, fps: Fraction) -> str:
        """Write with x264 CRF 0 and check the file decodes to ``frames`` (count, size and PSNR)."""
        from ipfvr_core.video_io import VideoWriter

        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        n, height, width, _ = frames.shape
        with VideoWriter(path, width=width, height=height, fps=fps, crf=WRITE_CRF, preset=WRITE_PRESET) as writer:
            for image in frames:
                writer.write(image)
        decoded, decoded_fps = read_frames(path)
        if decoded.shape != frames.shape or decoded_fps != fps:
            raise IPFVRError(f"{relative} decodes to {decoded.shape} at {decoded_fps} fps, not {frames.shape} at {fps}")
        worst = min(psnr(d, f) for d, f in zip(decoded, frames, strict=True))
        if worst < MIN_WRITE_PSNR_DB:
            raise IPFVRError(f"{relative}: a frame decodes at {worst:.1f} dB PSNR, under {MIN_WRITE_PSNR_DB} dB")
        return relative

    def carphone_cut(self, which: str, cut: int, n: int | None) -> tuple[str, np.ndarray, Fraction]:
        """The carphone video without frame ``cut`` (first ``n`` frames after that), written once."""
        key = ("cut", which, cut, n)
        if key not in self._memo:
            frames, fps = self.carphone(which)
            kept = np.delete(frames, cut, axis=0)  # (T-1, H, W, 3)
            kept = kept if n is None else kept[:n]
            tail = "" if n is None else f"-first{n}"
            relative = self.write_video(f"media/carphone_{which}-cut{cut:03d}{tail}.mp4", kept, fps)
            self._memo[key] = (relative, kept, fps)
        return self._memo[key]

    def carphone_frame_png(self, cut: int) -> str:
        key = ("frame", cut)
        if key not in self._memo:
            frames, _ = self.carphone("pristine")
            self._memo[key] = self.write_png(f"media/carphone_pristine-frame{cut:03d}.png", frames[cut])
        return self._memo[key]

    def confident_faces(self, source: str) -> list[Any]:
        """Confident dlib detections of a still source, best first."""
        key = ("faces", source)
        if key not in self._memo:
            analyzer = self.analyzer()
            faces = [f for f in analyzer.detect(self.photo(source)) if f.score >= analyzer.confident_score]
            self._memo[key] = sorted(faces, key=lambda f: -f.score)
        return self._memo[key]

    def face_sizes(self, frames: np.ndarray, video: str) -> tuple[float | None, float]:
        """(median face size of the best detection or None, share of measured frames with a face) of ``video``."""
        key = ("face_sizes", video)
        if key not in self._memo:
            self._memo[key] = self._measure_faces(frames)
        return self._memo[key]

    def _measure_faces(self, frames: np.ndarray) -> tuple[float | None, float]:
        analyzer = self.analyzer()
        sizes, found, measured = [], 0, frames[::MEASURE_EVERY]
        for image in measured:
            faces = analyzer.detect(image)
            if faces:
                found += 1
                sizes.append(face_size_px(faces[0].kps))
        return (float(np.median(sizes)) if sizes else None), found / len(measured)

    # -- cases ------------------------------------------------------------------------------

    def build(self, key: str, quick: bool, carphone: list[CarphoneRecipe], stills: list[StillRecipe]) -> None:
        entries = [self.carphone_case(r) for r in carphone] + [self.still_case(r) for r in stills]
        order = {"carphone": 0, "carphone-redegraded": 1, "stills": 2, "hijack": 3}
        entries.sort(key=lambda e: (order[e["group"]], e["name"]))
        manifest = {"suite_version": SUITE_VERSION, "key": key, "quick": quick, "cases": entries}
        # the manifest is written last: a folder with a manifest is a finished build
        (self.root / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")

    def carphone_case(self, recipe: CarphoneRecipe) -> dict[str, Any]:
        from ipfvr_core.degrade import SEVERITIES, degrade_video

        gt_path, gt, fps = self.carphone_cut("pristine", recipe.cut, recipe.n_frames)
        count = f"{len(gt)} frames" + (f" (first {recipe.n_frames} after the cut)" if recipe.n_frames else "")
        details: dict[str, Any] = {"frames": len(gt), "size": [gt.shape[2], gt.shape[1]], "fps": str(fps)}
        if recipe.severity is None:
            degraded_path, degraded, _ = self.carphone_cut("distorted", recipe.cut, recipe.n_frames)
            made = "shipped carphone_distorted.mp4"
        else:
            degraded, params = degrade_video(gt, SEVERITIES[recipe.severity], recipe.seed, fps=float(fps))
            slug = recipe.name.replace("/", "_")
            degraded_path = self.write_video(f"cases/{slug}/degraded.mp4", degraded, fps)
            made = f"pristine re-degraded '{recipe.severity}' ({params.describe()})"
            details["degradation"] = dataclasses.asdict(params)
        frame_png = self.carphone_frame_png(recipe.cut)
        if recipe.reference == "astronaut":
            references = [self.write_png("media/astronaut.png", self.photo("astronaut"))]
            judged, ref_text = frame_png, "skimage astronaut (a different person); judged against pristine frame"
        else:
            references, judged, ref_text = [frame_png], None, "pristine frame"
        details["gt_face_px"], details["gt_detect_rate"] = self.face_sizes(gt, gt_path)
        details["degraded_face_px"], details["degraded_detect_rate"] = self.face_sizes(degraded, degraded_path)
        note = (
            f"{made} vs carphone_pristine.mp4, frame {recipe.cut} cut from both, {count}, "
            f"{gt.shape[2]}x{gt.shape[1]} @{float(fps):.2f} fps, re-encoded x264 CRF {WRITE_CRF}; "
            f"reference: {ref_text} {recipe.cut}"
        )
        return {
            "name": recipe.name,
            "group": recipe.group,
            "degraded": degraded_path,
            "ground_truth": gt_path,
            "references": references,
            "faces": recipe.faces,
            "judged_reference": judged,
            "note": note,
            "details": details,
        }

    def still_case(self, recipe: StillRecipe) -> dict[str, Any]:
        import cv2

        from ipfvr_core.degrade import SEVERITIES, degrade_video
        from ipfvr_core.evaluation.synth import camera_path, reference_variant, render_path

        photo = self.photo(recipe.source)
        faces = self.confident_faces(recipe.source)
        if recipe.face_rank >= len(faces):
            raise IPFVRError(
                f"{recipe.name}: {recipe.source} has {len(faces)} confident faces, rank {recipe.face_rank} asked"
            )
        face = faces[recipe.face_rank]
        face_px = face_size_px(face.kps)
        x0, y0, x1, y1 = (float(v) for v in face.bbox)
        center = ((x0 + x1) / 2, (y0 + y1) / 2)
        # Scale the photo so the face has the target size; upsampling (bicubic) only when the photo is too small.
        scale = recipe.target_face_px / face_px
        size = (round(photo.shape[1] * scale), round(photo.shape[0] * scale))
        upsampled = scale > 1
        scaled = cv2.resize(photo, size, interpolation=cv2.INTER_CUBIC if upsampled else cv2.INTER_AREA)
        scaled_center = ((center[0] + 0.5) * scale - 0.5, (center[1] + 0.5) * scale - 0.5)
        affines = camera_path(
            recipe.n_frames,
            recipe.seed,
            pan_px=recipe.pan_px,
            zoom_range=recipe.zoom_range,
            max_rotation_deg=recipe.max_rotation_deg,
        )
        gt = render_path(scaled, scaled_center, recipe.out_size, affines)
        degraded, params = degrade_video(gt, SEVERITIES[recipe.severity], recipe.seed + 1, fps=float(STILL_FPS))
        slug = recipe.name.replace("/", "_")
        gt_path = self.write_video(f"cases/{slug}/ground_truth.mp4", gt, STILL_FPS)
        degraded_path = self.write_video(f"cases/{slug}/degraded.mp4", degraded, STILL_FPS)

        crop = self._face_crop(photo, center, face_px)
        reference = reference_variant(crop, recipe.reference_kind, recipe.seed + 2)
        analyzer = self.analyzer()
        confident = [f for f in analyzer.detect(reference) if f.score >= analyzer.confident_score]
        if len(confident) != 1:
            raise IPFVRError(f"{recipe.name}: the reference has {len(confident)} confident faces, not 1")
        reference_path = self.write_png(f"cases/{slug}/reference.png", reference)

        details: dict[str, Any] = {
            "frames": recipe.n_frames,
            "size": list(recipe.out_size),
            "fps": str(STILL_FPS),
            "source_face_px": face_px,
            "photo_scale": scale,
            "reference_size": [reference.shape[1], reference.shape[0]],
            "degradation": dataclasses.asdict(params),
        }
        details["gt_face_px"], details["gt_detect_rate"] = self.face_sizes(gt, gt_path)
        details["degraded_face_px"], details["degraded_detect_rate"] = self.face_sizes(degraded, degraded_path)
        source_text = {
            "astronaut": "skimage astronaut",
            "t1": f"insightface t1.jpg face #{recipe.face_rank + 1} by dlib score",
            "tom_hanks": "insightface Tom_Hanks_54745.png",
        }[recipe.source]
        resample = f"upsampled x{scale:.2f} bicubic" if upsampled else f"downscaled x{scale:.2f} (area)"
        lo, hi = recipe.zoom_range
        note = (
            f"{source_text} (face {face_px:.0f} px, {resample} to {recipe.target_face_px:.0f} px) along a camera path "
            f"(pan +-{recipe.pan_px:g} px, zoom {lo:g}-{hi:g}, roll +-{recipe.max_rotation_deg:g} deg), "
            f"{recipe.n_frames} frames {recipe.out_size[0]}x{recipe.out_size[1]} @{float(STILL_FPS):g} fps; "
            f"degraded '{recipe.severity}' ({params.describe()}); reference: {recipe.reference_kind} of a "
            f"{crop.shape[1]}x{crop.shape[0]} crop of the photo around the face"
        )
        return {
            "name": recipe.name,
            "group": "stills",
            "degraded": degraded_path,
            "ground_truth": gt_path,
            "references": [reference_path],
            "faces": "target",
            "judged_reference": None,
            "note": note,
            "details": details,
        }

    @staticmethod
    def _face_crop(photo: np.ndarray, center: tuple[float, float], face_px: float) -> np.ndarray:
        """Square crop of REFERENCE_CROP_FACES face sizes around the face, moved (or shrunk) to fit the photo."""
        height, width = photo.shape[:2]
        side = min(round(REFERENCE_CROP_FACES * face_px), width, height)
        left = int(np.clip(round(center[0] - side / 2), 0, width - side))
        top = int(np.clip(round(center[1] - side / 2), 0, height - side))
        return np.ascontiguousarray(photo[top : top + side, left : left + side])
