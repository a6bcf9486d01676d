"""c2d: classifier to diffusion. Class-conditional speech generation with a single frozen classifier backbone."""

__version__ = "0.1.0"
