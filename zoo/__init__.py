"""A model zoo of reinforcement-learning vision methods on PyTorch Lightning.

>>> from zoo import load, list_models, model_info
>>> list_models("drlt-*")
>>> tracker = load("drlt-otb")
"""

__version__ = "0.1.0"
__all__ = ["load", "list_models", "model_info"]


def __getattr__(name):
    # Lazy, so that `import zoo` (and every CLI's --help) does not pay for importing torch.
    if name == "load":
        from zoo.hub import load

        return load
    if name in ("list_models", "model_info"):
        from zoo import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
