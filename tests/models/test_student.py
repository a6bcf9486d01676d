"""The few-step student (models/student.py): forward-only on the classifier, conditioned on digit and guidance,
initialised from the teacher's shared weights; the distillation's pieces."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from c2d.models.classifier import NoiseConditionedClassifier
from c2d.models.config import SIZES
from c2d.models.sde import alpha_sigma
from c2d.models.student import Student, data_prediction, ddim_step, init_from_teacher, pseudo_huber, student_config
from c2d.models.subnet import ScoreSubnet, SingleBackbone
from c2d.runtime.sde import SDEConfig

TINY = SIZES["tiny"]
SDE = SDEConfig()


def teacher_and_student(seed: int = 0):
    torch.manual_seed(seed)
    classifier = NoiseConditionedClassifier(TINY.classifier)
    cfg = dataclasses.replace(TINY.subnet, output="edm", data_mean=-0.6, data_var=0.2)
    teacher = SingleBackbone(classifier, ScoreSubnet(cfg, classifier.tap_channels), SDE)
    for p in teacher.subnet.parameters():  # a trained-looking teacher: non-zero everywhere, the head included
        torch.nn.init.normal_(p, std=0.05)
    student = Student(classifier, student_config(cfg), SDE, n_classes=10)
    return teacher, student


def onehot(digits):
    return torch.nn.functional.one_hot(torch.tensor(digits), 10).float()


def test_student_takes_no_gradient_through_the_classifier_and_hears_digit_and_guidance():
    _, student = teacher_and_student()
    for p in student.condition.parameters():
        torch.nn.init.normal_(p, std=0.1)
    torch.nn.init.normal_(student.subnet.head.weight, std=0.1)
    x = torch.randn(2, 1, 80, 88, requires_grad=True)
    t = torch.tensor([0.5, 0.5])
    eps = student(x, t, onehot([3, 3]), torch.tensor([2.0, 2.0]))
    assert eps.shape == x.shape
    assert not any(p.requires_grad for p in student.classifier.parameters())
    other_digit = student(x, t, onehot([3, 7]), torch.tensor([2.0, 2.0]))
    other_gamma = student(x, t, onehot([3, 3]), torch.tensor([2.0, 0.0]))
    assert torch.allclose(eps[0], other_digit[0]) and not torch.allclose(eps[1], other_digit[1])
    assert torch.allclose(eps[0], other_gamma[0]) and not torch.allclose(eps[1], other_gamma[1])


def test_student_refuses_gradient_taps_or_another_output():
    teacher, _ = teacher_and_student()
    for cfg in (teacher.subnet.cfg, dataclasses.replace(teacher.subnet.cfg, use_gradient_taps=False, output="eps")):
        with pytest.raises(ValueError, match="forward taps only"):
            Student(teacher.classifier, cfg, SDE, 10)


def test_init_from_teacher_copies_the_shared_decoder_and_starts_unconditioned():
    teacher, student = teacher_and_student()
    copied = init_from_teacher(student, teacher)
    assert any(k.startswith("stages.") for k in copied) and "head.weight" in copied
    assert not any(".proj_g." in k or ".attn." in k for k in copied)  # gradient-tap fusions have no counterpart
    for k in copied:
        assert torch.equal(student.subnet.state_dict()[k], teacher.subnet.state_dict()[k])
    x, t = torch.randn(2, 1, 80, 88), torch.tensor([0.3, 0.8])
    with torch.no_grad():
        a = student(x, t, onehot([1, 2]), torch.tensor([0.0, 3.0]))
        b = student(x, t, onehot([5, 9]), torch.tensor([4.0, 1.0]))
    assert torch.equal(a, b)  # the condition embedding starts at zero


def test_a_ddim_step_with_the_exact_eps_lands_on_the_same_data_prediction():
    """For a single point x_0 the exact eps is (x_t - alpha x_0) / sigma: every DDIM step keeps x_0 fixed, and the
    data prediction recovers it."""
    x0 = torch.randn(3, 1, 4, 5)
    t_hi, t_lo = torch.full((3,), 0.8), torch.full((3,), 0.3)
    alpha, sigma = alpha_sigma(t_hi, SDE)
    z = torch.randn_like(x0)
    x_hi = alpha.view(-1, 1, 1, 1) * x0 + sigma.view(-1, 1, 1, 1) * z
    x_lo = ddim_step(z, x_hi, t_hi, t_lo, SDE)
    a_lo, s_lo = alpha_sigma(t_lo, SDE)
    assert torch.allclose(x_lo, a_lo.view(-1, 1, 1, 1) * x0 + s_lo.view(-1, 1, 1, 1) * z, atol=1e-5)
    assert torch.allclose(data_prediction(z, x_lo, t_lo, SDE), x0, atol=1e-4)


def test_pseudo_huber_is_quadratic_near_zero_and_linear_far_away():
    zero = torch.zeros(1000)
    assert pseudo_huber(zero, zero).item() == 0.0
    small, large = pseudo_huber(zero + 0.003, zero), pseudo_huber(zero + 3.0, zero)
    assert small.item() == pytest.approx(0.003**2 / (2 * 0.03), rel=0.01)
    assert large.item() == pytest.approx(3.0 - 0.03, rel=0.01)
