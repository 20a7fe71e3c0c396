"""Tests of ipfvr_core.image_io on skimage's astronaut and images generated with Pillow."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

import media_factory as mf
from ipfvr_core.errors import InputError
from ipfvr_core.image_io import read_image


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()  # (512, 512, 3) uint8


def _save(image: Image.Image, path: Path, **options: object) -> Path:
    image.save(path, **options)
    return path


def _expect(code: str, source: Path | bytes, **options: object) -> InputError:
    with pytest.raises(InputError) as caught:
        read_image(source, field="face_photo", **options)  # type: ignore[arg-type]
    assert caught.value.code == code, caught.value
    assert caught.value.field == "face_photo"
    if isinstance(source, Path):
        assert source.name in caught.value.message
    return caught.value


def test_png_is_read_exactly(tmp_path: Path, astronaut: np.ndarray) -> None:
    path = _save(Image.fromarray(astronaut), tmp_path / "astronaut.png")
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == (512, 512, 3)
    assert np.array_equal(image, astronaut)
    assert np.array_equal(read_image(path.read_bytes()), astronaut)
    image[0, 0] = 0  # the result belongs to the caller


def test_jpeg_is_read_closely(tmp_path: Path, astronaut: np.ndarray) -> None:
    path = _save(Image.fromarray(astronaut), tmp_path / "astronaut.jpg", quality=95)
    image = read_image(path)
    assert image.shape == (512, 512, 3)
    assert np.abs(image.astype(np.int16) - astronaut.astype(np.int16)).mean() < 3


def test_grayscale_becomes_three_equal_channels(tmp_path: Path, astronaut: np.ndarray) -> None:
    gray = Image.fromarray(astronaut).convert("L")
    image = read_image(_save(gray, tmp_path / "gray.png"))
    assert image.shape == (512, 512, 3)
    assert np.array_equal(image[..., 0], np.asarray(gray))
    assert np.array_equal(image[..., 0], image[..., 2])


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 256, dtype=np.uint16)[None, :].repeat(8, axis=0)  # (8, 256)
    path = _save(Image.fromarray(ramp), tmp_path / "ramp16.png")
    assert Image.open(path).mode.startswith("I")
    image = read_image(path)
    assert image.shape == (8, 256, 3)
    expected = np.round(ramp.astype(np.float64) / 257).astype(np.uint8)  # (8, 256)
    assert np.abs(image[..., 1].astype(int) - expected.astype(int)).max() <= 1


def test_alpha_is_flattened_onto_white(tmp_path: Path, astronaut: np.ndarray) -> None:
    rgba = np.dstack([astronaut, np.full((512, 512), 255, np.uint8)])  # (512, 512, 4)
    rgba[:, :256, 3] = 0  # left half fully transparent
    rgba[:, :256, :3] = 0  # whatever colour hides under transparency must not show
    image = read_image(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "rgba.png"))
    assert image.shape == (512, 512, 3)
    assert (image[:, :256] == 255).all()
    assert np.array_equal(image[:, 256:], astronaut[:, 256:])


def test_palette_image_becomes_rgb(tmp_path: Path, astronaut: np.ndarray) -> None:
    palette = Image.fromarray(astronaut).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    image = read_image(_save(palette, tmp_path / "palette.png"))
    assert image.shape == (512, 512, 3)
    assert np.array_equal(image, np.asarray(palette.convert("RGB")))


def test_animated_gif_gives_its_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (40, 30), colour) for colour in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(path).n_frames == 3
    image = read_image(path)
    assert image.shape == (30, 40, 3)
    assert tuple(int(v) for v in image[15, 20]) == (250, 0, 0)


@pytest.mark.parametrize(("orientation", "turns_clockwise"), [(6, 1), (3, 2), (8, 3), (1, 0)])
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int, turns_clockwise: int) -> None:
    stored = mf.pattern_frame(0, 120, 80)  # (80, 120, 3), white marker at the top-left
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _save(Image.fromarray(stored), tmp_path / "photo.jpg", exif=exif, quality=95)
    image = read_image(path)
    expected = np.rot90(stored, k=-turns_clockwise)  # EXIF 6 = turn 90° clockwise to display
    assert image.shape == expected.shape
    assert np.abs(image.astype(np.int16) - expected.astype(np.int16)).mean() < 4


def test_zero_byte_file_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    _expect("invalid_reference", path)
    _expect("invalid_reference", b"")


def test_text_named_png_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("definitely not a picture\n" * 10)
    _expect("invalid_reference", path)


def test_truncated_jpeg_is_invalid(tmp_path: Path, astronaut: np.ndarray) -> None:
    whole = _save(Image.fromarray(astronaut), tmp_path / "whole.jpg", quality=90)
    cut = mf.truncated_copy(whole, tmp_path / "cut.jpg", 0.5)
    assert Image.open(cut).size == (512, 512)  # the header alone still looks fine
    error = _expect("invalid_reference", cut)
    assert "truncated" in error.message


def test_missing_file_and_directory_are_invalid(tmp_path: Path) -> None:
    _expect("invalid_reference", tmp_path / "absent.png")
    (tmp_path / "folder.png").mkdir()
    _expect("invalid_reference", tmp_path / "folder.png")


def test_formats_outside_the_allow_list_are_refused(tmp_path: Path, astronaut: np.ndarray) -> None:
    path = _save(Image.fromarray(astronaut[:64, :64]), tmp_path / "tiny.pcx")
    assert Image.open(path).format == "PCX"  # Pillow itself would read it
    _expect("invalid_reference", path)


def test_png_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    small = tmp_path / "small_bomb.png"
    mf.png_bomb(small, 2000, 1000)
    assert read_image(small).shape == (1000, 2000, 3)  # the generator makes valid PNGs

    bomb = tmp_path / "bomb.png"
    mf.png_bomb(bomb, 30_000, 30_000)
    assert bomb.stat().st_size < 1_000_000
    # No pixel is decoded (2.7 GB of them) ...
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ImageFile.ImageFile, "load", _no_decoding)
        error = _expect("reference_too_large", bomb)
    assert "900000000 pixels" in error.message
    # ... and the peak memory of a fresh process that refuses it hardly moves (this one's peak is
    # already raised by earlier tests, so it is measured in a child).
    script = (
        "import resource, sys\n"
        "from ipfvr_core.errors import InputError\n"
        "from ipfvr_core.image_io import read_image\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    read_image(sys.argv[1])\n"
        "except InputError as exc:\n"
        "    assert exc.code == 'reference_too_large', exc.code\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    child = subprocess.run([sys.executable, "-c", script, str(bomb)], capture_output=True, text=True, check=True)
    growth_mib = int(child.stdout) / 1024  # ru_maxrss is in KiB on Linux
    print(f"peak memory growth while refusing a 30000x30000 PNG: {growth_mib:.1f} MiB")
    assert growth_mib < 50, f"peak memory grew by {growth_mib:.0f} MiB"


def _no_decoding(self: ImageFile.ImageFile) -> None:
    raise AssertionError("a pixel was decoded")


def test_bomb_is_refused_even_when_pillow_limit_is_disabled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Some libraries set Image.MAX_IMAGE_PIXELS = None on import; our own header check still holds."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    monkeypatch.setattr(ImageFile.ImageFile, "load", _no_decoding)
    bomb = tmp_path / "bomb.png"
    mf.png_bomb(bomb, 30_000, 30_000)
    error = _expect("reference_too_large", bomb)
    assert "30000x30000" in error.message


def test_pixel_limit_applies_below_pillow_bomb_threshold(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    mf.png_bomb(path, 5000, 2000)  # 10 MP: far below Pillow's own 89 MP warning
    error = _expect("reference_too_large", path, max_pixels=5_000_000)
    assert "5000x2000" in error.message
    assert read_image(path, max_pixels=10_000_000).shape == (2000, 5000, 3)


def test_byte_limit_is_checked_before_reading(tmp_path: Path, astronaut: np.ndarray) -> None:
    path = _save(Image.fromarray(astronaut), tmp_path / "astronaut.png")
    size = path.stat().st_size
    _expect("reference_too_large", path, max_bytes=size - 1)
    _expect("reference_too_large", path.read_bytes(), max_bytes=size - 1)
    assert read_image(path, max_bytes=size).shape == (512, 512, 3)


def test_bytes_source_is_named_in_messages() -> None:
    error = _expect("invalid_reference", b"GIF89a but not really")
    assert "uploaded image" in error.message


def test_webp_and_bmp_are_read(tmp_path: Path, astronaut: np.ndarray) -> None:
    for name, options in (("a.webp", {"lossless": True}), ("a.bmp", {})):
        buffer = io.BytesIO()
        Image.fromarray(astronaut).save(buffer, format=name.split(".")[1].upper(), **options)
        assert np.array_equal(read_image(buffer.getvalue()), astronaut), name
