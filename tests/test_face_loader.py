"""The face backend loader: defaults, the choice of backend by argument or environment, and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipfvr_core.errors import ConfigError
from ipfvr_core.faces.centerface_backend import CenterFaceAnalyzer
from ipfvr_core.faces.dlib_backend import DlibFaceAnalyzer
from ipfvr_core.faces.insightface_backend import InsightFaceAnalyzer
from ipfvr_core.faces.loader import INSIGHTFACE_DIR_ENV, load_analyzer

# insightface 2.1's norm_crop calls a skimage API deprecated in 0.26 (the backend silences it outside pytest).
pytestmark = pytest.mark.filterwarnings("ignore:`estimate` is deprecated:FutureWarning")


# --------------------------------------------------------------------------- loader
def test_loader_defaults_to_centerface_and_passes_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(INSIGHTFACE_DIR_ENV, raising=False)
    analyzer = load_analyzer(min_score=0.3)
    assert isinstance(analyzer, CenterFaceAnalyzer) and analyzer.config.min_score == 0.3
    assert isinstance(load_analyzer("auto"), CenterFaceAnalyzer)
    dlib_analyzer = load_analyzer("dlib", upsample=1)
    assert isinstance(dlib_analyzer, DlibFaceAnalyzer) and dlib_analyzer.config.upsample == 1


def test_loader_auto_picks_insightface_from_argument_or_environment(
    monkeypatch: pytest.MonkeyPatch, tiny_pack: Path
) -> None:
    monkeypatch.delenv(INSIGHTFACE_DIR_ENV, raising=False)
    by_argument = load_analyzer("auto", insightface_dir=str(tiny_pack), det_size=320)
    assert isinstance(by_argument, InsightFaceAnalyzer) and by_argument.config.det_size == 320
    monkeypatch.setenv(INSIGHTFACE_DIR_ENV, str(tiny_pack))
    assert isinstance(load_analyzer("auto"), InsightFaceAnalyzer)
    assert isinstance(load_analyzer("insightface"), InsightFaceAnalyzer)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: load_analyzer("mtcnn"), "face_backend"),
        (lambda: load_analyzer("insightface"), "insightface_dir"),
        (lambda: load_analyzer("dlib", insightface_dir="/models/buffalo_l"), "insightface_dir"),
        (lambda: load_analyzer("dlib", det_size=320), "det_size"),
        (lambda: load_analyzer("centerface", upsample=1), "upsample"),
        (lambda: load_analyzer("centerface", insightface_dir="/models/buffalo_l"), "insightface_dir"),
        (lambda: load_analyzer("centerface", min_score=1.5), "min_score"),
        (lambda: load_analyzer("insightface", insightface_dir="/nonexistent/pack"), "insightface_dir"),
    ],
)
def test_loader_errors_name_the_field(monkeypatch: pytest.MonkeyPatch, call: object, field: str) -> None:
    monkeypatch.delenv(INSIGHTFACE_DIR_ENV, raising=False)
    with pytest.raises(ConfigError) as info:
        call()  # type: ignore[operator]
    assert info.value.field == field
