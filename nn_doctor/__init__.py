"""nn-doctor: a command-line training doctor for PyTorch.

Importing the package is cheap (no torch import); the torch-using parts load on demand.
"""
__version__ = "0.1.0"

__all__ = ["__version__", "Monitor"]


def __getattr__(name):  # lazy: `from nn_doctor import Monitor` imports torch only then
    if name == "Monitor":
        from .monitor import Monitor
        return Monitor
    raise AttributeError(name)
