"""medjax: 3D medical image segmentation in JAX/Flax. Arrays are channels-last (NDHWC)."""

__version__ = "0.1.0"
