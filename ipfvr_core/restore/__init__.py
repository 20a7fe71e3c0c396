"""Restore a face video on one machine: ``Restorer(analyzer, engine).restore(video, references, output, options)``.

``restorer`` runs the job (probe, references, analysis pass, restore pass, report); ``analysis`` is
the first pass, ``streamer`` and ``output`` the engine and output sides of the second, ``reporting``
measures what the report says, ``stages`` keeps time and progress. The options, the progress
events and the report are defined outside this package (``ipfvr_core.options``, ``.progress``,
``.report``), importable without the model stack.
"""

from ipfvr_core.options import FaceMode, RestoreOptions
from ipfvr_core.progress import ProgressCallback, ProgressEvent
from ipfvr_core.report import RestoreReport, write_report
from ipfvr_core.restore.output import label
from ipfvr_core.restore.restorer import Restorer

__all__ = [
    "FaceMode",
    "ProgressCallback",
    "ProgressEvent",
    "RestoreOptions",
    "RestoreReport",
    "Restorer",
    "label",
    "write_report",
]
