"""DNSMOS P.835 (Reddy et al. 2022), the non-intrusive speech-quality predictor: SIG, BAK and OVRL MOS of a clip.

The model is the ONNX file that the `speechmos` package ships (`dnsmos_models/sig_bak_ovr.onnx`, bench extra), run
on ONNX Runtime; nothing is downloaded. As speechmos does, the clip is resampled to 16 kHz and repeated to the
model's 9.01 s input, and the raw outputs are mapped by DNSMOS' published polynomials. Unlike PESQ it needs no
reference, so it scores generated digits as well as copy synthesis, and it rewards what listeners hear (HiFi-GAN's
wide-band output scores above FSDD's own 8 kHz recordings).
"""

from __future__ import annotations

from importlib.resources import files

import numpy as np

RATE = 16_000
INPUT_SECONDS = 9.01
POLYNOMIALS = {  # raw model output -> MOS, the non-personalised fit (speechmos, DNSMOS P.835)
    "sig": np.poly1d([-0.08397278, 1.22083953, 0.0052439]),
    "bak": np.poly1d([-0.13166888, 1.60915514, -0.39604546]),
    "ovrl": np.poly1d([-0.06766283, 1.11546468, 0.04602535]),
}


class DNSMOSUnavailable(RuntimeError):
    """The speechmos package, which carries DNSMOS' ONNX model, is not installed."""


class DNSMOS:
    """dnsmos(wave at `rate`) -> {"sig", "bak", "ovrl"}."""

    def __init__(self, threads: int = 1):
        import onnxruntime as ort

        try:
            model = files("speechmos") / "dnsmos_models" / "sig_bak_ovr.onnx"
        except ModuleNotFoundError as exc:
            raise DNSMOSUnavailable("DNSMOS needs the speechmos package (its ONNX model): pip install 'c2d[bench]'") from exc
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])

    def __call__(self, wave: np.ndarray, rate: int) -> dict[str, float]:
        from c2d.runtime.audio import resample

        wave = np.asarray(wave, np.float64)
        if wave.ndim != 1 or wave.size == 0 or not np.all(np.isfinite(wave)):
            raise ValueError(f"DNSMOS needs a non-empty, finite 1-D waveform, got shape {wave.shape}")
        audio = resample(wave, rate, RATE).astype(np.float32)
        need = int(INPUT_SECONDS * RATE)
        audio = np.tile(audio, -(-need // audio.size))[:need]  # repeated to the model's input length
        raw = self.session.run(None, {"input_1": audio[None]})[0][0]
        return {name: float(poly(r)) for (name, poly), r in zip(POLYNOMIALS.items(), raw)}

    def scores(self, waves: np.ndarray, rate: int) -> dict[str, np.ndarray]:
        """Each score of each clip [N, L]: {"sig", "bak", "ovrl"} -> [N]."""
        rows = [self(w, rate) for w in waves]
        return {k: np.array([r[k] for r in rows]) for k in POLYNOMIALS}

    def mean(self, waves: np.ndarray, rate: int) -> dict[str, float]:
        """Mean of each score over clips [N, L]."""
        return {k: float(v.mean()) for k, v in self.scores(waves, rate).items()}
