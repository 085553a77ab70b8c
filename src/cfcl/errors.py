"""Exceptions whose message is shown to the user as one line by the CLI."""


class CfclError(Exception):
    """Base class: bad input or state the user can fix; the CLI prints the message, no traceback."""


class ConfigError(CfclError):
    """A configuration file or override names an unknown key or holds an invalid value."""


class StoreError(CfclError):
    """An image store is missing, incomplete, of another version, or would be overwritten."""


class CheckpointError(CfclError):
    """A checkpoint is corrupt or does not match the model or data it is used with."""
