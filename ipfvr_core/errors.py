"""Error hierarchy of the library.

Every error carries a stable machine-readable ``code`` and, where it applies, the ``field``
(CLI option, API field or function argument) that caused it. The CLI prints ``message`` on
one line and exits non-zero; the API maps the class to an HTTP status at its edge only.
"""

from __future__ import annotations


class IPFVRError(Exception):
    """Base class. ``code`` is stable across releases; ``message`` is for humans."""

    code: str = "internal_error"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class InputError(IPFVRError):
    """The caller's input is unusable (bad media, a reference without a face, a limit exceeded).

    Codes: invalid_video, no_video_stream, empty_video, invalid_reference, reference_too_large,
    no_face_in_reference, ambiguous_reference, limit_exceeded, invalid_option.
    """

    code = "invalid_input"


class OutputError(IPFVRError):
    """The output cannot be written (code: output_not_writable)."""

    code = "output_not_writable"


class ConfigError(IPFVRError):
    """A model/engine configuration or a weights folder is invalid (codes: config_invalid, weights_invalid)."""

    code = "config_invalid"


class Canceled(IPFVRError):
    """Raised between steps/clips when the caller's cancel check returns True."""

    code = "canceled"
