import pytest
import torch
from torch import nn

from c2d.models.costs import cost_table, trace_macs


def test_thop_rules_for_conv_linear_and_norm():
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.SiLU(), nn.Flatten(), nn.Linear(256, 10))
    counts = trace_macs(model, lambda: model(torch.zeros(1, 2, 8, 8)))
    assert counts["0"] == 4 * 8 * 8 * 2 * 9  # output elements x C_in x kh x kw
    assert counts["1"] == 2 * 256 * 2  # 2 x elements, x2 for the affine gain
    assert counts["2"] == 0
    assert counts["4"] == 10 * 256


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_cost_table_is_consistent(size):
    rows = {r.model: r for r in cost_table(size)}
    one, two = rows["Score subnet, guided"], rows["U-Net + Classifier, guided"]
    unguided, no_taps = rows["Score subnet, unconditional"], rows["... without gradient taps"]
    assert one.params_total == unguided.params_total and one.params_trainable < one.params_total
    assert one.macs_per_step > unguided.macs_per_step > no_taps.macs_per_step  # guidance and taps each add a backward pass
    assert one.params_total < two.params_total
    assert two.params_total == rows["U-Net, unconditional"].params_total + (one.params_total - one.params_trainable)
    student = rows["Few-step student (no backward pass)"]
    assert student.params_total - student.params_trainable == one.params_total - one.params_trainable  # the same classifier
    assert no_taps.macs_per_step <= student.macs_per_step < rows["... without gradient taps, guided"].macs_per_step  # forward only
