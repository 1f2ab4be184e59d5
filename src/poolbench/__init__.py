"""poolbench: honest, grid-scale experiments with pooling layers in CNNs."""

__version__ = "0.1.0"
