"""Run under torchrun by test_distributed.py: DDP training steps of the classifier and of a subnet on it,
then each rank saves the weights it ended with."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from c2d.models.data import load_features
from c2d.models.train import TrainConfig, make_job, train
from c2d.runtime.sde import SDEConfig

features, out_dir = load_features("train", features_file=sys.argv[1]), Path(sys.argv[2])
cfg = TrainConfig(steps=4, batch_size=4, lr=1e-2, warmup=1, bf16=False, ckpt_every=1000)
result = {}
for kind in ("classifier", "subnet"):
    job = make_job(kind, "tiny", SDEConfig(), classifier_path=out_dir / "classifier.pt", seed=0)
    initial = {k: v.clone() for k, v in job.trainable.state_dict().items()}
    train(job, features, cfg, out_dir / f"{kind}.pt", progress=False)
    dist.barrier()  # the subnet reads the classifier checkpoint that rank 0 wrote
    result[kind] = {"final": job.trainable.state_dict(), "initial": initial}
rank = dist.get_rank()
torch.save({"result": result, "world": dist.get_world_size()}, out_dir / f"rank{rank}.pt")
dist.destroy_process_group()
