import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from c2d.cli import main
from c2d.models.checkpoint import build_single_backbone, load_checkpoint


@pytest.mark.slow
def test_train_classifier_then_subnet_through_the_cli(tmp_path, features_file):
    runner = CliRunner()
    common = ["--size", "tiny", "--steps", "3", "--batch-size", "4", "--features", str(features_file)]
    res = runner.invoke(main, ["train", "classifier", "-o", str(tmp_path / "c.pt"), "--release", str(tmp_path / "c.rel.pt"), *common])
    assert res.exit_code == 0, res.output
    assert "step 3" in res.output
    res = runner.invoke(main, ["train", "subnet", "--classifier", str(tmp_path / "c.rel.pt"), "-o", str(tmp_path / "s.pt"), *common])
    assert res.exit_code == 0, res.output
    model = build_single_backbone(load_checkpoint(tmp_path / "s.pt", "subnet"))
    assert model.subnet.cfg.use_gradient_taps
    assert (tmp_path / "c.pt.log").read_text().count("\n") >= 1


def test_subnet_without_classifier_is_a_usage_error(tmp_path, features_file):
    res = CliRunner().invoke(main, ["train", "subnet", "-o", str(tmp_path / "s.pt"), "--features", str(features_file)])
    assert res.exit_code == 2 and "--classifier" in res.output
    assert not (tmp_path / "s.pt").exists()


def test_costs_prints_the_table():
    res = CliRunner().invoke(main, ["costs", "--size", "tiny"])
    assert res.exit_code == 0
    assert "U-Net + Classifier, guided" in res.output and "single backbone / two-model" in res.output


def test_runtime_modules_import_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "from c2d.runtime import audio, bundle, samplers, sde, vocoder\n"
        "x_T, z = samplers.draw_noise([0], 3, (1, 4, 4))\n"
        "out = samplers.euler_maruyama(lambda x, t: 0 * x, x_T, z, samplers.linear_schedule(3, 1e-3), sde.SDEConfig())\n"
        "assert out.shape == (1, 1, 4, 4) and audio.clip_features(np.zeros(22050)).shape == (80, 88)\n"
        "import c2d.cli\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_sample_writes_log_mels_and_refuses_a_classifier_checkpoint(tmp_path, features_file):
    runner = CliRunner()
    common = ["--size", "tiny", "--steps", "2", "--batch-size", "4", "--features", str(features_file)]
    assert runner.invoke(main, ["train", "classifier", "-o", str(tmp_path / "c.pt"), *common]).exit_code == 0
    assert runner.invoke(main, ["train", "subnet", "--classifier", str(tmp_path / "c.pt"), "-o", str(tmp_path / "s.pt"), *common]).exit_code == 0
    out = tmp_path / "seven.npy"
    res = runner.invoke(main, ["sample", "--checkpoint", str(tmp_path / "s.pt"), "--digit", "7", "--count", "2", "--steps", "3", "-o", str(out)])
    assert res.exit_code == 0, res.output
    import numpy as np

    x = np.load(out)
    assert x.shape == (2, 80, 88) and np.isfinite(x).all() and not np.array_equal(x[0], x[1])
    res = runner.invoke(main, ["sample", "--checkpoint", str(tmp_path / "c.pt"), "-o", str(tmp_path / "x.npy")])
    assert res.exit_code == 1 and "classifier checkpoint" in res.output
    assert not (tmp_path / "x.npy").exists()
    res = runner.invoke(main, ["sample", "--checkpoint", str(tmp_path / "s.pt"), "--guidance", "-1", "-o", str(tmp_path / "x.npy")])
    assert res.exit_code == 2 and not (tmp_path / "x.npy").exists()


def test_corrupt_classifier_checkpoint_is_one_clear_line_and_no_output(tmp_path, features_file):
    bad = tmp_path / "classifier.pt"
    bad.write_bytes(b"not a checkpoint")
    res = CliRunner().invoke(
        main, ["train", "subnet", "--size", "tiny", "--classifier", str(bad), "-o", str(tmp_path / "s.pt"), "--features", str(features_file)]
    )
    assert res.exit_code == 1 and "corrupt or unsafe checkpoint" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "s.pt").exists()


def test_fresh_install_script_stops_and_names_the_failing_step(tmp_path):
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "fresh_install.sh"
    run = subprocess.run(["bash", str(script), str(tmp_path / "no-such-repo"), str(tmp_path / "work")], capture_output=True, text=True)
    assert run.returncode != 0
    assert f"FAILED: clone {tmp_path / 'no-such-repo'}" in run.stderr
    assert not (tmp_path / "work" / "c2d" / ".venv").exists()  # nothing after the failed step ran
