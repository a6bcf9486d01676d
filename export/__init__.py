"""torch -> ONNX export of the generators (see issue: exporter)."""
