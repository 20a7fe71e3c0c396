"""One definition per job option, one mapping from the API's options to the library's, one report form."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from pydantic import ValidationError

from ipfvr_core.errors import InputError
from ipfvr_core.limits import VideoLimits
from ipfvr_core.options import JobOption, RestoreOptions, job_options
from ipfvr_core.progress import ProgressEvent
from ipfvr_core.report import RestoreReport
from jobs.options import JobOptions, restore_options
from jobs.schemas import ProgressPublic
from report_factory import sample_report

SERVICE_OPTIONS = [o for o in job_options() if o.spec.service]
# Fields the worker sets from its own configuration and the job's identity.
WORKER_SETTINGS = {"limits", "reference_max_pixels", "identity"}
# Fields without a spec that a service job leaves at the library's default: tracking and encoding settings.
LIBRARY_SETTINGS = {
    "target_max_distance",
    "min_track_frames",
    "target_margin",
    "max_gap_frames",
    "preset",
    "compare_path",
}


def other_value(option: JobOption) -> Any:
    """A valid value of ``option`` that is not its default."""
    spec = option.spec
    if spec.choices:
        return next(c for c in reversed(spec.choices) if c != option.default)
    if option.kind is str:
        return "a face"
    return option.kind(spec.maximum if spec.maximum is not None else spec.minimum + 1)


def bad_value(option: JobOption) -> Any:
    """A value of the right type that ``option`` refuses."""
    spec = option.spec
    if spec.choices:
        return "nope" if option.kind is str else 3
    if spec.max_length is not None:
        return "x" * (spec.max_length + 1)
    return option.kind(spec.maximum + 1 if spec.maximum is not None else spec.minimum - 1)


def test_every_restore_option_is_a_client_choice_a_worker_setting_or_a_library_default() -> None:
    """A new field is either an option with a spec (mapped by name when ``service``) or listed here on purpose."""
    specified = {o.name for o in job_options()}
    plain = {f.name for f in dataclasses.fields(RestoreOptions)} - specified
    assert plain <= WORKER_SETTINGS | LIBRARY_SETTINGS, plain - WORKER_SETTINGS - LIBRARY_SETTINGS
    assert {"faces", "prompt", "negative_prompt", "guidance", "seed", "upscale", "background"} <= {
        o.name for o in SERVICE_OPTIONS
    }
    assert not WORKER_SETTINGS & {o.name for o in SERVICE_OPTIONS}


@pytest.mark.parametrize("option", SERVICE_OPTIONS, ids=lambda o: o.name)
def test_each_client_option_reaches_the_library_unchanged(option: JobOption) -> None:
    value = other_value(option)
    limits = VideoLimits(max_width=640, max_height=480, max_pixels=640 * 480, max_duration_s=30.0)
    mapped = restore_options(
        JobOptions.model_validate({option.name: value}), limits=limits, reference_max_pixels=1234, identity="idt_module"
    )
    mapped.validate()
    expected = dataclasses.replace(
        RestoreOptions(), limits=limits, reference_max_pixels=1234, identity="idt_module", **{option.name: value}
    )
    assert mapped == expected


def test_a_job_without_options_gets_the_library_defaults() -> None:
    mapped = restore_options(JobOptions(), limits=VideoLimits(), reference_max_pixels=40_000_000, identity=None)
    assert mapped == RestoreOptions()


def test_guidance_keeps_its_value_from_the_request_json_to_the_engine_options() -> None:
    stored = JobOptions.model_validate_json('{"guidance": 7.5, "engine": "ipfvr"}').model_dump_json()
    options = restore_options(
        JobOptions.model_validate_json(stored), limits=VideoLimits(), reference_max_pixels=1, identity=None
    )
    assert options.guidance == 7.5 and isinstance(options.guidance, float)


@pytest.mark.parametrize("option", SERVICE_OPTIONS, ids=lambda o: o.name)
def test_the_api_schema_is_the_library_definition(option: JobOption) -> None:
    schema = JobOptions.model_json_schema()["properties"][option.name]
    spec = option.spec
    assert schema["description"] == spec.help and schema["default"] == option.default
    typed = next(s for s in schema.get("anyOf", [schema]) if s.get("type") != "null")
    assert typed["type"] == {int: "integer", float: "number", str: "string"}[option.kind]
    assert typed.get("enum", []) == list(spec.choices)
    assert (typed.get("minimum"), typed.get("maximum"), typed.get("maxLength")) == (
        spec.minimum,
        spec.maximum,
        spec.max_length,
    )
    assert ({"type": "null"} in schema.get("anyOf", [])) == option.optional


@pytest.mark.parametrize("option", SERVICE_OPTIONS, ids=lambda o: o.name)
def test_the_api_and_the_library_refuse_the_same_value(option: JobOption) -> None:
    value = bad_value(option)
    with pytest.raises(ValidationError) as api:
        JobOptions.model_validate({option.name: value})
    assert api.value.errors()[0]["loc"] == (option.name,)
    with pytest.raises(InputError) as library:
        RestoreOptions(**{option.name: value}).validate()
    assert library.value.field == option.name and library.value.code == "invalid_option"


def test_the_report_reads_back_into_the_same_report() -> None:
    report = sample_report(
        frames=3,
        references=("a.png", "b.png"),
        warnings=("careful",),
        options=RestoreOptions(faces="all", guidance=4.0, upscale=2),
    )
    text = json.dumps(report.to_dict(), indent=2)
    again = RestoreReport.from_dict(json.loads(text))
    assert again == report
    assert json.dumps(again.to_dict(), indent=2) == text


def test_the_report_json_keeps_its_keys_in_order() -> None:
    data = sample_report().to_dict()
    assert list(data) == [
        "input",
        "output",
        "compare",
        "options",
        "references",
        "identity",
        "tracks",
        "frames",
        "frames_total",
        "frames_with_faces",
        "frames_restored",
        "timings_s",
        "fps",
        "versions",
        "warnings",
    ]
    assert list(data["identity"]) == [
        "metric",
        "same_person_threshold",
        "target_max_distance",
        "before",
        "after",
        "mean_improvement",
        "embed_every",
        "frames_measured",
    ]
    assert list(data["frames"][1]) == [
        "index",
        "time_s",
        "faces",
        "restored",
        "distance_before",
        "distance_before_restored",
        "distance_after",
        "transfer",
    ]
    assert data["frames"][1]["transfer"] == [{"reference": "face.png", "confidence": 0.8}]
    assert data["options"] == {
        f.name: getattr(RestoreOptions(), f.name) if f.name != "limits" else dataclasses.asdict(VideoLimits())
        for f in dataclasses.fields(RestoreOptions)
    }


def test_the_public_progress_is_the_library_event_in_percent() -> None:
    public = ProgressPublic.of(ProgressEvent(stage="analyze", current=8, total=120, fraction=0.1234))
    assert public.model_dump() == {"stage": "analyze", "current": 8, "total": 120, "percent": 12.3}
