"""The package version, a core module so that any layer may read it; ``cfcl.__version__`` re-exports it."""

__version__ = "0.1.0"
