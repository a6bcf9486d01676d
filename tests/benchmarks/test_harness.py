"""benchmarks/harness.py: the shared flags, interleaved timing and the provenance every result file carries."""

import json

import numpy as np

from c2d.benchmarks import harness


class FakeBackend:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def run(self, feeds, outputs):
        self.log.append(self.name)
        return [feeds["x"]]


def test_every_round_visits_every_backend_once_in_turn():
    log = []
    backends = {k: FakeBackend(k, log) for k in ("a", "b", "c")}
    times = harness.interleaved_rounds(backends, [{"x": 0}], rounds=3, calls=2, warmup=1)
    assert log[:3] == ["a", "b", "c"]  # warm-up
    assert log[3:] == ["a", "a", "b", "b", "c", "c"] * 3
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}


def test_results_carry_command_machine_and_date(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["/x/benchmarks/table1.py", "--count", "2"])
    path = tmp_path / "r.json"
    harness.write_results(path, {"rows": [1]}, "| a |\n")
    record = json.loads(path.read_text())
    assert record["command"] == "python -m c2d.benchmarks.table1 --count 2"
    assert record["cpu"] == harness.cpu_model() and len(record["date"]) == 10
    assert path.with_suffix(".md").read_text() == "| a |\n"
    harness.write_results(path, {"command": "mine"}, "")
    assert json.loads(path.read_text())["command"] == "mine"  # a benchmark's own command is kept


def test_parser_has_the_shared_flags():
    ap = harness.parser("doc", "demo", threads=1, rounds=5, seed=7, work=True, bundle=True)
    args = ap.parse_args([])
    assert args.results == harness.RESULTS / "demo.json" and args.threads == 1 and args.rounds == 5
    assert str(args.out_dir) == "runs/demo" and args.bundle is None and args.seed == 7
    from c2d.runtime.generate import default_bundle

    assert harness.parse(ap, []).bundle == default_bundle()  # the shipped bundle unless one is named
    assert str(harness.parser("doc", "demo", work="vocoders").parse_args([]).out_dir) == "runs/vocoders"  # a shared cache


def test_point_audio_is_generated_once_per_point_and_guidance(tmp_path, monkeypatch):
    """The cache is keyed by generator, sampler, steps and guidance: a second call reads it, another guidance makes
    its own set at that scale."""
    import types

    import c2d.models.evaluation as evaluation
    import c2d.runtime.bundle as bundle

    calls = []

    def fake_generate(bundle_dir, count, sampler, steps, guidance, seed, threads=None):
        calls.append(guidance)
        run = types.SimpleNamespace(audio=np.full((2, 4), guidance or 3.0, np.float32), sample_rate=8000, digits=[0, 1])
        return None, run

    monkeypatch.setattr(evaluation, "generate_as_users_hear", fake_generate)
    monkeypatch.setattr(bundle, "generator_sha256", lambda _: "ab" * 32)
    first = harness.point_audio(tmp_path, tmp_path, ("ancestral", 25), 1, 1)
    again = harness.point_audio(tmp_path, tmp_path, ("ancestral", 25), 1, 1)
    scaled = harness.point_audio(tmp_path, tmp_path, ("ancestral", 25), 1, 1, guidance=2.0)
    assert calls == [None, 2.0]
    assert np.array_equal(first[0], again[0]) and scaled[0][0, 0] == 2.0 and first[1] == 8000
    assert sorted(p.name for p in (tmp_path / ("ab" * 6)).iterdir()) == ["ancestral-25-g2-n1-s1000.npz", "ancestral-25-n1-s1000.npz"]
    np.savez_compressed(tmp_path / ("ab" * 6) / "ddim-10-n1-s1000.npz", audio=np.zeros((2, 4)), rate=8000, digits=[0, 1])
    assert np.isnan(harness.point_audio(tmp_path, tmp_path, ("ddim", 10), 1, 1)[3])  # a set cached without its time
