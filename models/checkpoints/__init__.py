"""The trained `small` checkpoints shipped inside the package (docs/checkpoints.md).

SHIPPED_SUBNET is the generator the package's bundle (runtime/bundles/small) was exported from; the 4,000-step
subnet-small*.pt pair is the equal-budget taps / no-taps comparison of Table 1. SHIPPED_VOCODER is the bundle's vocoder.
"""

SHIPPED_SUBNET = "subnet-small-18k.pt"
SHIPPED_VOCODER = "vocoder-fourier.pt"  # the Fourier vocoder distilled from HiFi-GAN V1 (c2d train vocoder)


def shipped_checkpoint(name: str):
    """Path of a checkpoint shipped inside the package (models/checkpoints/)."""
    from importlib.resources import files

    return files("c2d.models.checkpoints") / name
