"""An ONNX Runtime `CalibrationDataReader` over a recording: yields each recorded graph call's feeds, in order."""

from __future__ import annotations

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from c2d.calibration.record import Recording


class RecordingReader(CalibrationDataReader):
    """Feeds of the recorded calls, one dict per call, in order (rewinds on `rewind()` / `set_range`).

    max_rows splits each call into slices of at most that many rows (the ranges do not depend on how the rows are
    batched): ORT's histogram calibrators keep every activation of a pass in memory, and one whole call of the shipped
    generator's default recording (40 rows) took more than 20 GB.
    """

    def __init__(self, recording: Recording, max_rows: int | None = None):
        self.recording = recording
        self.items: list[tuple[int, int]] = []  # (first row, end row) of each item
        for lo, hi in zip(recording.offsets[:-1].tolist(), recording.offsets[1:].tolist()):
            rows = max(max_rows or hi - lo, 1)
            self.items += [(a, min(a + rows, hi)) for a in range(lo, hi, rows)]
        self.start, self.end = 0, len(self.items)
        self._next = 0

    def __len__(self) -> int:
        return len(self.items)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= self.end:
            return None
        lo, hi = self.items[self._next]
        self._next += 1
        return {k: v[lo:hi] for k, v in self.recording.feeds.items()}

    def rewind(self) -> None:
        self._next = self.start

    def set_range(self, start_index: int, end_index: int) -> None:
        """ORT's strided calibration (CalibStridedMinMax) reads the recording in slices."""
        self.start, self.end = start_index, min(end_index, len(self.items))
        self._next = self.start
