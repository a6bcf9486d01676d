"""On-device runtime: numpy (+ onnxruntime / tensorrt) only. Nothing in this package imports torch."""
