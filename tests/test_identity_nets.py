"""The PyTorch FaceNet port against OpenCV's run of the same graph, on real faces; and its gradients."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ipfvr_core.evaluation.judges import FaceNetJudge, square_crop
from ipfvr_core.faces.loader import load_analyzer
from ipfvr_core.identity_nets.facenet import INPUT_SIZE, load_facenet
from ipfvr_core.image_io import read_image


@pytest.fixture(scope="module")
def judge() -> FaceNetJudge:
    return FaceNetJudge()


@pytest.fixture(scope="module")
def facenet() -> torch.nn.Module:
    return load_facenet()


def crops(image: np.ndarray, judge: FaceNetJudge) -> list[tuple[np.ndarray, np.ndarray]]:
    """(box, the judge's 160x160 crop) of every face CenterFace finds."""
    faces = load_analyzer("centerface").detect(image)
    assert faces
    return [(f.bbox, square_crop(image, f.bbox, judge.config.margin, INPUT_SIZE)) for f in faces]


def test_the_port_matches_opencv_on_the_astronaut_and_every_t1_face(
    judge: FaceNetJudge,
    facenet: torch.nn.Module,
    astronaut_rgb: np.ndarray,
    insightface_t1: Path,
) -> None:
    cosines = []
    for image in (astronaut_rgb, read_image(insightface_t1)):
        for box, crop in crops(image, judge):
            expected = judge.embed(image, box)  # cv2.dnn on the frozen graph, unit norm
            with torch.no_grad():
                got = facenet(torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255.0)[0].numpy()
            cosines.append(float(got @ expected))
    print(f"\ncosine of the port to cv2.dnn on {len(cosines)} faces: min {min(cosines):.6f}")
    assert len(cosines) == 7 and min(cosines) >= 0.999, cosines


def test_the_port_is_differentiable_and_tells_people_apart(
    judge: FaceNetJudge,
    facenet: torch.nn.Module,
    insightface_t1: Path,
) -> None:
    faces = [crop for _, crop in crops(read_image(insightface_t1), judge)]
    batch = torch.from_numpy(np.stack(faces)).permute(0, 3, 1, 2).float().div(255.0).requires_grad_(True)
    embeddings = facenet(batch)  # (6, 512)
    assert embeddings.shape == (6, 512)
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(6))
    similarity = embeddings @ embeddings.T  # (6, 6)
    assert float(similarity.detach()[~torch.eye(6, dtype=torch.bool)].max()) < 0.7  # six different people
    similarity[0, 1].backward()
    assert batch.grad is not None and float(batch.grad.abs().sum()) > 0


def test_an_insightface_onnx_recogniser_runs_as_a_differentiable_torch_network(tmp_path, astronaut_rgb) -> None:
    import onnxruntime
    import torch

    from ipfvr_core.errors import ConfigError
    from ipfvr_core.identity_nets.onnx_graph import ArcFaceNetwork
    from tiny_insightface import write_tiny_arcface

    path = write_tiny_arcface(tmp_path / "w600k_r50.onnx")
    network = ArcFaceNetwork(path)
    face = cv2.resize(np.ascontiguousarray(astronaut_rgb[20:220, 150:350]), (112, 112), interpolation=cv2.INTER_AREA)
    images = np.stack([face, face[:, ::-1]]).astype(np.float32) / 255.0  # (2, 112, 112, 3) RGB
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().requires_grad_(True)  # (2, 3, 112, 112)
    ours = network(batch)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    blob = (images.transpose(0, 3, 1, 2) * 255.0 - 127.5) / 127.5  # insightface's ArcFaceONNX input
    theirs = session.run(None, {session.get_inputs()[0].name: blob.astype(np.float32)})[0]
    theirs /= np.linalg.norm(theirs, axis=1, keepdims=True)
    cosines = (ours.detach().numpy() * theirs).sum(axis=1)
    assert cosines.min() >= 0.9999, cosines
    ours[0].dot(ours[1]).backward()  # differentiable down to the pixels
    assert batch.grad is not None and batch.grad.abs().sum() > 0
    # an operator it does not run is named, not approximated
    import onnx

    model = onnx.load(str(path))
    model.graph.node[0].op_type = "Softplus"
    onnx.save(model, str(tmp_path / "odd.onnx"))
    with pytest.raises(ConfigError, match="Softplus"):
        ArcFaceNetwork(tmp_path / "odd.onnx")
