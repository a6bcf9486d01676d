import dataclasses

import pytest
import torch

from c2d.models.classifier import NoiseConditionedClassifier
from c2d.models.config import SIZES
from c2d.models.subnet import ScoreSubnet, SingleBackbone, classifier_pass
from c2d.models.unet import TwoModel, UNet
from c2d.runtime.sde import SDEConfig

TINY = SIZES["tiny"]


def tiny_classifier(seed=0) -> NoiseConditionedClassifier:
    torch.manual_seed(seed)
    return NoiseConditionedClassifier(TINY.classifier)


def tap_modules(classifier):
    """The modules whose outputs are the taps h_0..h_3."""
    enc = classifier.encoder
    return [level[-1] for level in enc.levels] + [enc.bottleneck[-1]]


def test_gradient_taps_equal_finite_differences():
    classifier = tiny_classifier().double().eval()
    x = torch.randn(2, 1, 80, 88, dtype=torch.float64)
    t = torch.tensor([0.3, 0.7], dtype=torch.float64)
    _, taps, grads, _ = classifier_pass(classifier, x, t, want_tap_grads=True)
    assert [g.shape for g in grads] == [h.shape for h in taps]
    gen = torch.Generator().manual_seed(0)
    for k, module in enumerate(tap_modules(classifier)):
        for _ in range(3):
            idx = tuple(torch.randint(s, (1,), generator=gen).item() for s in taps[k].shape)
            fd = []
            for sign in (1.0, -1.0):

                def bump(mod, inp, out, sign=sign, idx=idx):
                    out = out.clone()
                    out[idx] += sign * 1e-5
                    return out

                handle = module.register_forward_hook(bump)
                with torch.no_grad():
                    fd.append(torch.logsumexp(classifier(x, t), dim=1).sum().item())
                handle.remove()
            numeric = (fd[0] - fd[1]) / 2e-5
            assert grads[k][idx].item() == pytest.approx(numeric, rel=1e-4, abs=1e-8), f"tap {k} at {idx}"


def test_guidance_gradient_is_grad_of_log_p_y():
    classifier = tiny_classifier().double().eval()
    x = torch.randn(1, 1, 80, 88, dtype=torch.float64)
    t = torch.tensor([0.5], dtype=torch.float64)
    y = torch.eye(10, dtype=torch.float64)[[4]]
    _, _, _, guide = classifier_pass(classifier, x, t, False, y)
    direction = torch.randn_like(x)
    with torch.no_grad():
        f = lambda z: classifier(z, t).log_softmax(1)[0, 4].item()
        numeric = (f(x + 1e-6 * direction) - f(x - 1e-6 * direction)) / 2e-6
    assert (guide * direction).sum().item() == pytest.approx(numeric, rel=1e-5)


def test_subnet_output_shape_and_ablation_has_fewer_parameters():
    classifier = tiny_classifier()
    with_taps = ScoreSubnet(TINY.subnet, classifier.tap_channels)
    without = ScoreSubnet(dataclasses.replace(TINY.subnet, use_gradient_taps=False), classifier.tap_channels)
    assert sum(p.numel() for p in without.parameters()) < sum(p.numel() for p in with_taps.parameters())
    model = SingleBackbone(classifier, without, SDEConfig())
    assert model(torch.randn(3, 1, 80, 88), torch.rand(3)).shape == (3, 1, 80, 88)


@pytest.mark.parametrize("two_model", [False, True])
def test_zero_guidance_gives_the_unguided_prediction(two_model):
    classifier = tiny_classifier()
    if two_model:
        torch.manual_seed(1)
        model = TwoModel(UNet(TINY.unet), classifier, SDEConfig())
    else:
        model = SingleBackbone(classifier, ScoreSubnet(TINY.subnet, classifier.tap_channels), SDEConfig())
    for p in model.parameters():  # zero-initialised heads would make this trivially true
        torch.nn.init.normal_(p, std=0.05) if p.requires_grad else None
    model.eval()
    x, t, y = torch.randn(2, 1, 80, 88), torch.tensor([0.2, 0.9]), torch.eye(10)[[1, 2]]
    plain = model(x, t)
    guided0, _ = model.guided(x, t, y, torch.zeros(2))
    guided3, _ = model.guided(x, t, y, torch.full((2,), 3.0))
    torch.testing.assert_close(guided0, plain)
    assert (guided3 - plain).abs().max() > 1e-6


def test_classifier_stays_frozen_even_in_train_mode():
    classifier = tiny_classifier()
    model = SingleBackbone(classifier, ScoreSubnet(TINY.subnet, classifier.tap_channels), SDEConfig())
    model.train()
    assert not model.classifier.training and model.subnet.training
    assert not any(p.requires_grad for p in model.classifier.parameters())


def test_gaussian_skip_makes_eps_follow_the_noise_energy_of_x():
    """With the skip, an untrained subnet (zero head) predicts the Gaussian denoiser's eps exactly: at t = 1 that is
    x itself, so scaling x scales eps (the exact eps does the same). Without it the output ignores x entirely."""
    from c2d.models.precond import gaussian_eps
    from c2d.models.sde import alpha_sigma

    cfg = dataclasses.replace(TINY.subnet, gaussian_skip=True, data_mean=-0.7, data_var=0.2)
    classifier = tiny_classifier()
    model = SingleBackbone(classifier, ScoreSubnet(cfg, classifier.tap_channels), SDEConfig()).eval()
    plain = SingleBackbone(classifier, ScoreSubnet(TINY.subnet, classifier.tap_channels), SDEConfig()).eval()
    z = torch.randn(2, 1, 80, 88, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([1.0, 0.4])
    with torch.no_grad():
        eps = model(z, t)
        torch.testing.assert_close(eps, gaussian_eps(z, *alpha_sigma(t, SDEConfig()), -0.7, 0.2))
        assert torch.allclose(model(1.3 * z, t)[0], 1.3 * eps[0], rtol=0.01, atol=0.02)
        assert plain(1.3 * z, t).abs().max() == 0  # zero head: nothing
