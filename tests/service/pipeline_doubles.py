"""A restorer for the web page's browser test (tests only): the real library pipeline around an engine double.

Face detection, tracking, alignment, paste-back, H.264 encoding and the identity report (distances
before and after, per frame) are the library's own; only the engine is
:class:`~tests.engine_doubles.CheckerboardEngineDouble`, so a clip of a dozen frames is restored in
seconds on CPU and the report names the double as its engine.
"""

from __future__ import annotations

from tests.engine_doubles import CheckerboardEngineDouble
from worker.restorer import LibraryRestorer, RestorerConfig


def load_pipeline_with_engine_double(config: RestorerConfig) -> LibraryRestorer:
    from ipfvr_core.faces.loader import load_analyzer
    from ipfvr_core.restore import Restorer

    analyzer = load_analyzer(config.face_backend, insightface_dir=config.insightface_dir)
    return LibraryRestorer(Restorer(analyzer, CheckerboardEngineDouble(face_size=128, clip_length=8, delay=0)), config)
