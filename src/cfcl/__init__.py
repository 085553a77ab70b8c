"""cfcl: counterfactual contrastive learning for medical imaging.

The public Python API (docs/python.md) is imported on first use, so ``import cfcl`` and the
command line stay fast: ``load_encoder``, ``embed``, ``load_generator``, ``read_images``,
``ImageStore``, ``Generator`` and ``CfclError``.
"""

from cfcl.version import __version__ as __version__  # re-exported: the version of the package face

__all__ = ["CfclError", "Generator", "ImageStore", "embed", "load_encoder", "load_generator", "read_images"]


def __getattr__(name: str):
    if name in __all__:
        from cfcl import api

        return getattr(api, name)
    raise AttributeError(f"module 'cfcl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
