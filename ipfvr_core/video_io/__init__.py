"""Video input and output with PyAV: probing, streaming decode, H.264 encode with audio passthrough.

Reading (``probing``, ``decoding``)
    :func:`probe` opens a file, checks it against :class:`VideoLimits` and decodes the first frame
    (so a truncated or corrupt file is refused before any work starts) without decoding the rest.
    :func:`iter_frames` then streams upright RGB frames one at a time, keeping each frame's original
    timestamp so variable frame rate timing survives a round trip.

Writing (``writing``, ``audio``)
    :class:`VideoWriter` encodes H.264 (libx264, yuv420p, BT.709) into mp4/mov/mkv, places every frame
    at the timestamp it is given, copies the audio packets of a source file through unchanged
    (interleaved as frames arrive, trimmed to the video's end), writes into a temporary file next to
    the destination and renames it over the destination only when everything succeeded.

Every failure caused by the media is an :class:`~ipfvr_core.errors.InputError` or
:class:`~ipfvr_core.errors.OutputError` with a stable code; no PyAV exception escapes.
"""

from ipfvr_core.limits import VideoLimits
from ipfvr_core.video_io.decoding import iter_frames, rotate_upright
from ipfvr_core.video_io.media import VideoFrame, VideoInfo, even_size
from ipfvr_core.video_io.probing import probe
from ipfvr_core.video_io.writing import OUTPUT_FORMATS, X264_PRESETS, VideoWriter, check_output_path

__all__ = [
    "OUTPUT_FORMATS",
    "X264_PRESETS",
    "VideoFrame",
    "VideoInfo",
    "VideoLimits",
    "VideoWriter",
    "check_output_path",
    "even_size",
    "iter_frames",
    "probe",
    "rotate_upright",
]
