"""Reference identity: encode reference photos, and measure identity distance to them.

A reference photo must show the person to keep. A photo with no face is refused; a photo with
several faces is accepted only when there is a principled way to pick one:

1. one face clearly dominates (its box area is at least ``dominance`` times the next one), or
2. other references show a single face, and exactly one candidate matches their identity.

Otherwise the photo is refused as ambiguous, with an error naming the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ipfvr_core.errors import InputError
from ipfvr_core.faces.align import estimate_affine, warp_face
from ipfvr_core.faces.base import Face, FaceAnalyzer
from ipfvr_core.image_io import read_image


@dataclass
class Reference:
    """One encoded reference photo."""

    name: str  # file name as given (for messages and the report)
    face: Face  # the chosen face, with its embedding set
    faces_found: int  # how many faces the detector saw in the photo
    aligned: np.ndarray  # (S, S, 3) uint8 aligned crop of the chosen face


@dataclass
class ReferenceSet:
    """All references of one job, and how to compare faces against them."""

    references: list[Reference]
    metric: str  # "l2" or "cosine", from the analyzer
    threshold: float  # same-person distance threshold, from the analyzer
    consistency: list[float] = field(default_factory=list)  # each reference's distance to the others (mean)

    @property
    def embeddings(self) -> list[np.ndarray]:
        return [r.face.embedding for r in self.references if r.face.embedding is not None]


def _area(face: Face) -> float:
    x0, y0, x1, y1 = (float(v) for v in face.bbox)
    return max(0.0, x1 - x0) * max(0.0, y1 - y0)


def _reference_name(source: str | Path | bytes, index: int) -> str:
    return Path(source).name if isinstance(source, (str, Path)) else f"reference[{index}]"


def encode_references(
    analyzer: FaceAnalyzer,
    sources: Sequence[str | Path | bytes],
    *,
    aligned_size: int = 512,
    max_pixels: int = 40_000_000,
    dominance: float = 3.0,
    field: str = "reference",
) -> ReferenceSet:
    """Read, detect, pick and embed the face of every reference. Raises InputError naming the file."""
    if not sources:
        raise InputError("at least one reference image is required", field=field, code="invalid_option")
    decoded: list[tuple[str, np.ndarray, list[Face]]] = []
    for i, source in enumerate(sources):
        name = _reference_name(source, i)
        image = read_image(source, field=field, max_pixels=max_pixels)
        faces = [f for f in analyzer.detect(image) if f.score >= analyzer.confident_score]
        if not faces:
            raise InputError(f"no face found in reference {name!r}", field=field, code="no_face_in_reference")
        decoded.append((name, image, faces))

    # Single-face references (and dominant faces) first: they define the identity used to choose
    # among the candidates of crowded photos.
    chosen: dict[int, Face] = {}
    for i, (_, image, faces) in enumerate(decoded):
        ranked = sorted(faces, key=_area, reverse=True)
        if len(ranked) == 1 or _area(ranked[0]) >= dominance * _area(ranked[1]):
            analyzer.embed(image, ranked[0])
            chosen[i] = ranked[0]
    anchors = [f.embedding for f in chosen.values() if f.embedding is not None]
    for i, (name, image, faces) in enumerate(decoded):
        if i in chosen:
            continue
        if not anchors:
            raise InputError(
                f"reference {name!r} shows {len(faces)} faces of similar size and no other reference "
                "identifies the person; crop it to one face",
                field=field,
                code="ambiguous_reference",
            )
        matches = []
        for face in faces:
            emb = analyzer.embed(image, face)
            d = float(np.mean([analyzer.distance(emb, a) for a in anchors]))
            if d < analyzer.match_threshold:
                matches.append((d, face))
        if len(matches) != 1:
            raise InputError(
                f"reference {name!r} shows {len(faces)} faces and {len(matches)} of them match the "
                "other references; crop it to one face",
                field=field,
                code="ambiguous_reference",
            )
        chosen[i] = matches[0][1]

    references = []
    for i, (name, image, faces) in enumerate(decoded):
        face = chosen[i]
        affine = estimate_affine(face.kps, aligned_size)
        references.append(
            Reference(name=name, face=face, faces_found=len(faces), aligned=warp_face(image, affine, aligned_size))
        )
    refset = ReferenceSet(references=references, metric=analyzer.metric, threshold=analyzer.match_threshold)
    embs = refset.embeddings
    if len(embs) > 1:
        refset.consistency = [
            float(np.mean([analyzer.distance(e, o) for j, o in enumerate(embs) if j != i])) for i, e in enumerate(embs)
        ]
    return refset


def distance_to_references(analyzer: FaceAnalyzer, embedding: np.ndarray, references: ReferenceSet) -> float:
    """Mean identity distance of one face embedding to every reference (0 = same as all)."""
    return float(np.mean([analyzer.distance(embedding, r) for r in references.embeddings]))


def summarize(distances: Sequence[float]) -> dict[str, float | int | None]:
    """Count, mean, median, min, max and p90 of a list of distances (None when empty)."""
    if not distances:
        return {"n": 0, "mean": None, "median": None, "min": None, "max": None, "p90": None}
    arr = np.asarray(distances, dtype=np.float64)
    return {
        "n": int(arr.size),
        "mean": round(float(arr.mean()), 4),
        "median": round(float(np.median(arr)), 4),
        "min": round(float(arr.min()), 4),
        "max": round(float(arr.max()), 4),
        "p90": round(float(np.percentile(arr, 90)), 4),
    }
