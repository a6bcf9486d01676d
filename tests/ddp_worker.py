"""Run under torchrun by test_distributed.py: a few DDP training steps, then each rank saves its weights."""
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from c2d.models.data import load_features
from c2d.models.train import TrainConfig, make_job, train
from c2d.runtime.sde import SDEConfig

features, out_dir = sys.argv[1], Path(sys.argv[2])
job = make_job("classifier", "tiny", SDEConfig(), seed=0)
initial = {k: v.clone() for k, v in job.trainable.state_dict().items()}
cfg = TrainConfig(steps=4, batch_size=4, lr=1e-2, warmup=1, bf16=False, ckpt_every=1000)
train(job, load_features("train", features_file=features), cfg, out_dir / "ckpt.pt", progress=False)
rank = dist.get_rank()
torch.save({"final": job.trainable.state_dict(), "initial": initial, "world": dist.get_world_size()}, out_dir / f"rank{rank}.pt")
dist.destroy_process_group()
