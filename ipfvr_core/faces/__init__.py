"""Face analysis: detection backends, tracks, landmark smoothing, alignment and paste-back."""

from ipfvr_core.faces.base import Face, FaceAnalyzer

__all__ = ["Face", "FaceAnalyzer"]
