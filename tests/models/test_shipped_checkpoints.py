"""The committed `small` checkpoints: loadable, released, traceable to their classifier, and actually trained."""

from pathlib import Path

import numpy as np
import pytest
import torch

from c2d.models.checkpoint import build_classifier, build_single_backbone, build_unet, load_checkpoint, state_sha256
from c2d.models.checkpoints import SHIPPED_SUBNET
from c2d.models.data import DEFAULT_DATA, list_clips, read_resampled
from c2d.runtime.audio import clip_features

CKPTS = Path(__file__).resolve().parents[2] / "models" / "checkpoints"
SUBNETS = (SHIPPED_SUBNET, "subnet-small.pt", "subnet-small-notaps.pt", "subnet-small-gskip-1500.pt")
EDM_SUBNET = "subnet-small-edm-18k.pt"  # EDM output scaling on the trained-on classifier: not shipped (docs/samplers.md)
CLASSIFIERS = ("classifier-small.pt", "classifier-small-long.pt")
FILES = {name: "classifier" for name in CLASSIFIERS} | {"unet-small.pt": "unet"} | {name: "subnet" for name in (*SUBNETS, EDM_SUBNET)}


@pytest.mark.parametrize("name,kind", FILES.items())
def test_committed_checkpoint_is_a_small_released_file(name, kind):
    path = CKPTS / name
    assert path.stat().st_size <= 20 * 2**20
    ckpt = load_checkpoint(path, kind)
    assert ckpt["released"] and "optimizer" not in ckpt and ckpt["size"] == "small"
    build = {"classifier": build_classifier, "subnet": build_single_backbone, "unet": build_unet}[kind]
    build(ckpt, name)


def test_subnets_embed_exactly_a_committed_classifier():
    """The EDM subnet stands on the trained-on classifier; every other subnet on the first one."""
    first, long = (state_sha256(load_checkpoint(CKPTS / name)["ema"]) for name in CLASSIFIERS)
    for name in (*SUBNETS, EDM_SUBNET):
        embedded = load_checkpoint(CKPTS / name)["classifier"]
        assert embedded["sha256"] == (long if name == EDM_SUBNET else first) == state_sha256(embedded["model"])


@pytest.mark.slow
@pytest.mark.skipif(not DEFAULT_DATA.is_dir(), reason="FSDD not present next to the checkout")
def test_committed_classifier_recognises_real_test_clips():
    clips = [c for c in list_clips() if c.split == "test"][::6]  # 50 clips, all digits and speakers
    x = torch.from_numpy(np.stack([clip_features(read_resampled(c.path, 22050)) for c in clips])[:, None])
    classifier = build_classifier(load_checkpoint(CKPTS / "classifier-small.pt")).eval()
    with torch.no_grad():
        pred = classifier(x, torch.zeros(len(x))).argmax(1).numpy()
    assert (pred == np.array([c.digit for c in clips])).mean() >= 0.9


def _radial_slope(name: str, scale: float) -> float:
    """<eps(scale z, t=1), z> / |z|^2 for pure noise z: the exact eps is about scale * z there."""
    model = build_single_backbone(load_checkpoint(CKPTS / name)).eval()
    z = torch.randn(2, 1, 80, 88, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eps = model(scale * z, torch.ones(2))
    return float((eps * z).sum() / (z * z).sum())


def test_only_the_preconditioned_subnets_scale_eps_with_the_noise_in_x():
    """The probability-flow ODE's failure (docs/samplers.md): the shipped (eps) subnet's eps hardly follows |x_t|;
    with the Gaussian skip or EDM's output scaling it does."""
    assert _radial_slope("subnet-small-gskip-1500.pt", 1.3) == pytest.approx(1.3, abs=0.03)
    assert _radial_slope(EDM_SUBNET, 1.3) == pytest.approx(1.3, abs=0.03)
    assert _radial_slope(SHIPPED_SUBNET, 1.3) < 1.1
