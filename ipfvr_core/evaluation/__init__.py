"""Evaluation of restoration engines on judged clips with known ground truth.

``cases`` builds and caches the builtin suite (:class:`~ipfvr_core.evaluation.cases.EvalCase`
records: degraded video, ground truth, reference photos) from ``recipes`` with ``suite_builder``;
``synth`` makes ground-truth videos from still photos and reference variants. Metrics, judges and the report live
in sibling modules.
Nothing is re-exported here so that importing one part never loads the others.
"""
