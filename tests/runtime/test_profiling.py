"""The profile's statistics, the machine record and fingerprint, and the deployment gate's interval."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from c2d.cli import main
from c2d.runtime import deployment, machine
from c2d.runtime.gate import Budget, bootstrap_interval, worst_step_error
from c2d.runtime.profile import Measure, latency_stats, profile_bundle

X86_AMX = {
    "vendor_id": "GenuineIntel",
    "model name": "Intel(R) Xeon(R) Processor",
    "flags": "fpu sse avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8",
}
X86_PLAIN = {**X86_AMX, "flags": "fpu sse avx2 avx512f avx512_vnni"}


def test_latency_stats_orders_its_percentiles_and_measures_spread():
    s = latency_stats([10.0] * 98 + [30.0, 50.0])
    assert s["n"] == 100 and s["min"] == 10.0 and s["max"] == 50.0 and s["p50"] == 10.0
    assert s["p50"] <= s["p90"] <= s["p99"] <= s["max"] and s["mean"] == pytest.approx(10.6)
    assert s["cv"] == pytest.approx(s["std"] / s["mean"]) and s["cv"] > 0.3
    assert latency_stats([5.0, 5.0])["cv"] == 0.0


def test_measure_runs_until_its_iterations_or_duration():
    assert Measure().more(0, 0.0, 0) and not Measure().more(8, 1.0, 1)  # default: one run
    m = Measure(iterations=20)
    assert m.more(16, 9.0, 2) and not m.more(24, 9.0, 3)
    d = Measure(duration=2.0)
    assert d.more(100, 1.9, 5) and not d.more(100, 2.1, 6)
    with pytest.raises(ValueError, match="not both"):
        Measure(iterations=5, duration=1.0)
    with pytest.raises(ValueError):
        Measure(warmup=-1)


def test_isa_features_come_from_the_cpu_flags_and_key_the_fingerprint():
    amx, plain = machine.isa_features("x86_64", X86_AMX), machine.isa_features("x86_64", X86_PLAIN)
    assert "amx_bf16" in amx and "avx512_bf16" in amx and "amx_bf16" not in plain and "avx512_vnni" in plain
    record = {"cpu": "Intel(R) Xeon(R) Processor", "arch": "x86_64", "cores": 2, "engines": {"onnxruntime": "1.32.0"}}
    # the same model name with and without AMX: two machines, two cache files
    assert machine.fingerprint({**record, "isa": amx}) != machine.fingerprint({**record, "isa": plain})
    # what does not change the kernels (host name, OS release, Python path) does not change the fingerprint
    assert machine.fingerprint({**record, "isa": amx, "hostname": "a"}) == machine.fingerprint({**record, "isa": amx, "hostname": "b"})


def test_an_aarch64_process_on_an_x86_host_is_labelled_emulated():
    assert "emulated" in machine.emulation("aarch64", X86_AMX)
    assert machine.emulation("x86_64", X86_AMX) is None
    assert machine.emulation("aarch64", {"Features": "fp asimd asimddp"}) is None


def test_this_machines_record_names_what_the_engines_use():
    record = machine.machine_record()
    for key in ("cpu", "arch", "isa", "cores", "os", "python", "engines"):
        assert record[key], key
    assert "onnxruntime" in record["engines"] and record["cores"] >= 1
    assert set(record["isa"]) <= set(machine.X86_FEATURES) | set(machine.ARM_FEATURES)


def test_the_gate_interval_narrows_with_samples_and_covers_the_point_value():
    rng = np.random.default_rng(0)
    few, many = rng.gamma(4, 0.01, (6, 10)), rng.gamma(4, 0.01, (6, 90))  # [steps, samples], median about 0.037
    lo_few, hi_few = bootstrap_interval(few, worst_step_error)
    lo_many, hi_many = bootstrap_interval(many, worst_step_error)
    assert lo_few <= worst_step_error(few) <= hi_few and lo_many <= worst_step_error(many) <= hi_many
    assert hi_many - lo_many < (hi_few - lo_few) * 0.7
    assert bootstrap_interval(np.full((3, 4), np.inf), worst_step_error) == (float("inf"), float("inf"))


def test_thread_counts_explored_are_powers_of_two_and_the_cores(monkeypatch):
    monkeypatch.setattr(deployment, "max_threads", lambda: 12)
    assert deployment.thread_counts(None) == [1, 2, 4, 8, 12]
    assert deployment.thread_counts(3) == [3]
    monkeypatch.setattr(deployment, "max_threads", lambda: 1)
    assert deployment.thread_counts(None) == [1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--backend", "all", "--batch", "2"], "--batch"),
        (["--backend", "all", "--plot", "x.png"], "--plot"),
        (["--backend", "all", "--device", "cpu"], "--device"),
        (["--backend", "all", "--iterations", "5"], "--iterations"),
        (["--backend", "all", "--per-op"], "--per-op"),
        (["--backend", "ort", "--precision", "bf16"], "--precision applies to --backend openvino"),
        (["--iterations", "5", "--duration", "1"], "not both"),
        (["--in-bundle"], "--in-bundle applies"),
    ],
)
def test_profile_refuses_options_the_mode_would_ignore(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["profile", *args])
    assert res.exit_code == 2 and message in res.output, res.output
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_profile_takes_its_iterations_and_writes_statistics_and_provenance(tmp_path):
    res = CliRunner().invoke(
        main, ["profile", "--steps", "3", "--threads", "1", "--warmup", "1", "--iterations", "7", "--per-op", "--json", str(tmp_path / "p.json")]
    )
    assert res.exit_code == 0, res.output
    p = json.loads((tmp_path / "p.json").read_text())
    assert p["runs"] == 3 and p["step_ms"]["n"] == 9 == len(p["step_ms_all"]) and p["warmup_steps"] == 1  # whole runs of 3
    for key in ("min", "mean", "p50", "p90", "p99", "max", "cv"):
        assert p["step_ms"][key] >= 0, key
    assert p["machine"]["isa"] == machine.machine_record()["isa"] and p["provenance"]["c2d"] and p["generator_sha256"]
    assert p["peak"]["gemm"] == "ORT fp32" and 0 < p["fraction_of_peak"] < 2
    ops = p["per_op"]
    assert ops["calls"] == 3 and "Conv" in ops["ms_per_step"] and sum(ops["share"].values()) == pytest.approx(1.0)
    assert "p99" in res.output and "Per operator type" in res.output


@pytest.mark.slow
def test_profile_for_a_duration_runs_whole_runs_until_it_has_passed():
    p = profile_bundle(steps=2, threads=1, measure=Measure(warmup=0, duration=0.3))
    assert p["runs"] >= 1 and p["step_ms"]["n"] == 2 * p["runs"] and p["warmup_steps"] == 0
    assert (p["runs"] - 1) * p["end_to_end_s_stats"]["min"] < 0.3 + 1.0


def test_a_noisy_profile_says_so(monkeypatch):
    from c2d.runtime import profile as prof

    jitter = iter(np.tile([0.001, 0.02], 50))
    real = prof.time.perf_counter
    clock = {"now": real()}

    def fake_clock():
        clock["now"] += next(jitter, 0.001)
        return clock["now"]

    monkeypatch.setattr(prof.time, "perf_counter", fake_clock)
    monkeypatch.setattr(prof, "peak_for", lambda *a: None)
    p = profile_bundle(steps=4, threads=1, measure=Measure(warmup=0))
    assert p["step_ms"]["cv"] > 0.1 and any(w.startswith("noisy") for w in p["warnings"])


def test_the_deployment_budget_decides_by_interval():
    assert deployment.GATE_BUDGET.by_interval and deployment.GATE_BUDGET.count * 10 >= 30
    assert not Budget().by_interval  # c2d quantize's gate keeps its point rule


class ScaledEps:
    """A candidate whose eps is the reference's times (1 + error of each sample)."""

    def __init__(self, errors, log_mel):
        self.errors, self.log_mel = np.asarray(errors), log_mel
        self.model = self

    def run(self, feeds, outputs=None):
        return [feeds["ref"] * (1 + self.errors[:, None])]

    def sample(self, digits, count, *args, **kwargs):
        return fake_generation(self.log_mel)


def fake_generation(log_mel):
    from c2d.runtime.generate import Generation

    n = len(log_mel)
    return Generation(list(range(n)), list(range(n)), log_mel, np.zeros((n, 0), np.float32), 16000, 1, "em", 0.0, 0.0, 0.0)


def gate_on(errors, budget):
    from c2d.runtime.gate import ReferenceRun, compare

    n = len(errors)
    log_mel = np.zeros((n, 2, 3), np.float32)
    ref = np.ones((n, 4), np.float32)
    run = ReferenceRun(fake_generation(log_mel), [{"ref": ref}], [ref], 0, "em", 1, 1)
    return compare(run, ScaledEps(errors, log_mel), budget)


def test_a_candidate_whose_interval_reaches_past_the_budget_fails_by_interval_and_passes_by_point():
    errors = np.r_[np.full(6, 0.03), np.full(4, 0.2)]  # median 0.03, but the resamples' medians reach 0.2
    point = gate_on(errors, Budget(step_error=0.05))
    strict = gate_on(errors, Budget(step_error=0.05, by_interval=True))
    assert max(point.step_errors) == pytest.approx(0.03, rel=1e-3) and not point.failures
    low, high = strict.step_error_interval
    assert low == pytest.approx(0.03) and 0.05 < high and strict.failures and "95 % interval" in strict.failures[0]
    tight = gate_on(np.full(30, 0.03), Budget(step_error=0.05, by_interval=True))
    assert not tight.failures and tight.summary()["max_step_error_95"] == [0.03, 0.03]


def test_the_device_parity_tool_writes_every_output_and_compares_like_the_gate(tmp_path):
    import subprocess
    import sys

    from c2d.runtime.generate import default_bundle
    from c2d.runtime.parity import OUTPUTS, compare_outputs, load_reference

    bundle = default_bundle()
    done = subprocess.run([sys.executable, "-m", "c2d.runtime.parity", str(tmp_path), str(bundle), "--threads", "1"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    summary = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("C2D-PARITY "))[len("C2D-PARITY ") :])
    assert summary[bundle.name]["precision"] == "fp32" and max(summary[bundle.name]["parity_vs_stored_reference"].values()) < 1e-4
    got = dict(np.load(tmp_path / f"{bundle.name}.npz"))
    stored = {f"c{k}.{n}": outs[n] for k, (_, outs) in enumerate(load_reference(bundle)) for n in OUTPUTS}
    assert set(got) == set(stored) and max(compare_outputs(got, stored).values()) < 1e-4
    shifted = {k: v + (0.5 * np.abs(stored[k]).max() if k.endswith(".eps") else 0) for k, v in got.items()}
    errors = compare_outputs(shifted, stored)
    assert errors["eps"] == pytest.approx(0.5, rel=0.01) and errors["logits"] < 1e-4
    assert compare_outputs({k: v[:1] for k, v in got.items()}, stored)["eps"] == float("inf")  # another shape
