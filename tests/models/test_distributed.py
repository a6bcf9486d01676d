import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.mark.slow
def test_torchrun_two_ranks_end_with_identical_weights(tmp_path, features_file):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER), str(features_file), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    for kind in ("classifier", "subnet"):
        a, b = r0["result"][kind], r1["result"][kind]
        changed = False
        for name, value in a["final"].items():
            assert torch.equal(value, b["final"][name]), f"{kind}: {name} differs between ranks"
            changed |= not torch.equal(value, a["initial"][name])
        assert changed, f"{kind}: training steps did not change the weights"
        assert (tmp_path / f"{kind}.pt").exists()  # rank 0 wrote the checkpoint
