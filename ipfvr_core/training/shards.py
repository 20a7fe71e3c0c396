"""Training shards: WebDataset-style tar files, each with a JSON index for random access.

A sample is a group of tar members that share a key (the WebDataset convention: ``KEY.EXT``):
``KEY.json`` (its metadata) and one PNG per frame, ``KEY.000.png``, ``KEY.001.png``, ... A shard
``clips-000000.tar`` has ``clips-000000.idx.json`` beside it: for every sample, its key and each
member's ``[offset, size]`` of data in the tar, so a sample is read with two seeks and no scan.
The tar itself stays a plain tar: ``webdataset``, ``tar tf`` and streaming loaders read it as is.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ipfvr_core.errors import InputError


@dataclass(frozen=True)
class SampleRef:
    shard: Path  # the tar file
    key: str  # the sample's key (tar member basename)
    members: dict[str, tuple[int, int]]  # member suffix ("json", "000.png", ...) -> (data offset, size)


class ShardWriter:
    """Writes samples into ``{prefix}-{n:06d}.tar`` shards of at most ``max_samples`` each."""

    def __init__(self, folder: Path, prefix: str, *, max_samples: int = 64) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.max_samples = max_samples
        self.shards: list[str] = []  # file names written so far
        self.samples = 0
        self._tar: tarfile.TarFile | None = None
        self._index: list[dict[str, Any]] = []

    def write(self, key: str, metadata: dict[str, Any], frames: Sequence[np.ndarray]) -> None:
        """One sample: ``metadata`` as ``KEY.json`` and ``frames`` ((H, W, 3) RGB uint8) as PNGs."""
        if self._tar is None or len(self._index) >= self.max_samples:
            self._close_shard()
            name = f"{self.prefix}-{len(self.shards):06d}.tar"
            self._tar = tarfile.open(self.folder / name, "w", format=tarfile.USTAR_FORMAT)
            self.shards.append(name)
        members: dict[str, list[int]] = {}
        payloads = [("json", json.dumps(metadata, sort_keys=True).encode())]
        for i, frame in enumerate(frames):
            ok, png = cv2.imencode(".png", np.ascontiguousarray(frame[:, :, ::-1]))  # RGB -> BGR for OpenCV
            if not ok:
                raise InputError(f"could not encode frame {i} of {key}", field="frames", code="invalid_option")
            payloads.append((f"{i:03d}.png", png.tobytes()))
        assert self._tar is not None
        for suffix, data in payloads:
            info = tarfile.TarInfo(f"{key}.{suffix}")
            info.size = len(data)
            info.mtime = 0  # reproducible shards
            self._tar.addfile(info, io.BytesIO(data))
            members[suffix] = [self._tar.offset - _padded(len(data)), len(data)]
        self._index.append({"key": key, "members": members})
        self.samples += 1

    def _close_shard(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        index_path = self.folder / self.shards[-1].replace(".tar", ".idx.json")
        index_path.write_text(json.dumps({"samples": self._index}, indent=1))
        self._tar, self._index = None, []

    def close(self) -> None:
        self._close_shard()


def _padded(size: int) -> int:
    return (size + tarfile.BLOCKSIZE - 1) // tarfile.BLOCKSIZE * tarfile.BLOCKSIZE


def read_index(folder: str | Path, prefix: str) -> list[SampleRef]:
    """Every sample of the ``prefix`` shards in ``folder``, in shard and write order."""
    refs = []
    for index_path in sorted(Path(folder).glob(f"{prefix}-*.idx.json")):
        shard = index_path.with_name(index_path.name.replace(".idx.json", ".tar"))
        for sample in json.loads(index_path.read_text())["samples"]:
            members = {k: (int(v[0]), int(v[1])) for k, v in sample["members"].items()}
            refs.append(SampleRef(shard, sample["key"], members))
    return refs


def read_sample(ref: SampleRef) -> tuple[dict[str, Any], list[np.ndarray]]:
    """(metadata, frames as (H, W, 3) RGB uint8) of one sample."""
    with ref.shard.open("rb") as f:

        def member(suffix: str) -> bytes:
            offset, size = ref.members[suffix]
            f.seek(offset)
            return f.read(size)

        metadata = json.loads(member("json"))
        frames = []
        for suffix in sorted(s for s in ref.members if s.endswith(".png")):
            image = cv2.imdecode(np.frombuffer(member(suffix), np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                raise InputError(
                    f"{ref.shard.name}: {ref.key}.{suffix} is not a PNG", field="data", code="invalid_option"
                )
            frames.append(np.ascontiguousarray(image[:, :, ::-1]))  # BGR -> RGB
    return metadata, frames


def iter_tar_members(shard: Path) -> Iterator[str]:
    """Member names of a shard in order, read as a plain tar (what a streaming loader sees)."""
    with tarfile.open(shard) as tar:
        for info in tar:
            yield info.name
