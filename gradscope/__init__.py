"""gradscope: training-dynamics diagnostics for PyTorch, from the gradients themselves."""

__version__ = "0.1.0"
