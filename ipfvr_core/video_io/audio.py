"""Audio passthrough: a source's first audio stream copied packet by packet into an output, in time order."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
from av.container import InputContainer, OutputContainer

from ipfvr_core.errors import InputError, OutputError
from ipfvr_core.video_io.media import codec_name, error_reason, open_input


class AudioPassthrough:
    """Copies the packets of a source's first audio stream into an output stream, in time order."""

    def __init__(self, path: Path, source: InputContainer, output: OutputContainer, field: str) -> None:
        self._name = path.name
        self._field = field
        self._source = source
        stream = source.streams.audio[0]
        self._output = output
        self._output_stream = output.add_stream_from_template(stream)
        self._packets = source.demux(stream)
        self._pending: av.Packet | None = None
        self.packets_copied = 0

    @staticmethod
    def open(path: Path, output: OutputContainer, field: str, output_field: str) -> AudioPassthrough | None:
        """Attach the audio of ``path`` to ``output``; None when ``path`` has no audio stream."""
        source = open_input(path, field)
        try:
            if not source.streams.audio:
                source.close()
                return None
            codec = codec_name(source.streams.audio[0])
            if codec not in output.supported_codecs:
                raise OutputError(
                    f"audio codec {codec} of {path.name} cannot be stored in {output.format.name}; write .mkv instead",
                    field=output_field,
                    code="output_not_writable",
                )
            return AudioPassthrough(path, source, output, field)
        except BaseException:
            source.close()
            raise

    def copy_until(self, end: Fraction) -> None:
        """Mux every remaining packet that starts before ``end`` seconds."""
        while True:
            if self._pending is None:
                self._pending = self._next_packet()
                if self._pending is None:
                    return
            start = self._start_time(self._pending)
            if start is not None and start >= end:
                return
            self._pending.stream = self._output_stream
            self._output.mux(self._pending)
            self._pending = None
            self.packets_copied += 1

    def close(self) -> None:
        self._source.close()

    def _next_packet(self) -> av.Packet | None:
        try:
            for packet in self._packets:
                if packet.size > 0:  # skip the empty flush packet demux yields at the end
                    return packet
        except av.FFmpegError as exc:
            raise InputError(
                f"{self._name}: its audio cannot be read ({error_reason(exc)})", field=self._field, code="invalid_video"
            ) from exc
        return None

    @staticmethod
    def _start_time(packet: av.Packet) -> Fraction | None:
        timestamp = packet.pts if packet.pts is not None else packet.dts
        if timestamp is None or packet.time_base is None:
            return None
        return timestamp * Fraction(packet.time_base)
