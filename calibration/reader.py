"""An ONNX Runtime `CalibrationDataReader` over a recording: yields each recorded graph call's feeds, in order."""
from __future__ import annotations

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from c2d.calibration.record import Recording


class RecordingReader(CalibrationDataReader):
    """Feeds of calls [start, end) of a recording, one dict per call (rewinds on `rewind()` / `set_range`)."""

    def __init__(self, recording: Recording):
        self.recording = recording
        self.start, self.end = 0, recording.calls
        self._next = 0

    def __len__(self) -> int:
        return self.recording.calls

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= self.end:
            return None
        feeds = self.recording.call(self._next)
        self._next += 1
        return feeds

    def rewind(self) -> None:
        self._next = self.start

    def set_range(self, start_index: int, end_index: int) -> None:
        """ORT's strided calibration (CalibStridedMinMax) reads the recording in slices."""
        self.start, self.end = start_index, min(end_index, self.recording.calls)
        self._next = self.start
