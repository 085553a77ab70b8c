"""Exceptions whose message is shown to the user as one line by the CLI."""


class CfclError(Exception):
    """Base class: bad input or state the user can fix; the CLI prints the message, no traceback."""


class ConfigError(CfclError):
    """A configuration file or override names an unknown key or holds an invalid value."""


class StoreError(CfclError):
    """An image store is missing, incomplete, of another version, or would be overwritten."""


class CheckpointError(CfclError):
    """A checkpoint is corrupt or does not match the model or data it is used with."""


class MissingKeyError(ConfigError):
    """A key a stage needs is not set. The stage names the key in its own config; the command the
    user ran says how to set it in its own words (:meth:`by_flag`, :meth:`within`)."""

    def __init__(self, key: str, meaning: str, metavar: str = "VALUE", setting: str | None = None):
        self.key, self.meaning, self.metavar = key, meaning, metavar
        super().__init__(f"config key '{key}' is not set: pass {setting or f'--set {key}={metavar}'} ({meaning})")

    def by_flag(self, flag: str) -> "MissingKeyError":
        """The same key, set on a stage command by its flag (``--root DIR``)."""
        return MissingKeyError(self.key, self.meaning, self.metavar, f"{flag} {self.metavar}")

    def within(self, section: str) -> "MissingKeyError":
        """The same key inside ``section`` of a larger config (``data.prepare.root`` of a run config)."""
        return MissingKeyError(f"{section}.{self.key}", self.meaning, self.metavar)
