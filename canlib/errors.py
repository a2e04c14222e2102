"""The few exceptions canlib raises for a user's mistake or bad data.

Each carries one sentence that names the offending thing and says what was expected;
they subclass the builtin a caller would naturally catch (``ValueError``,
``FileNotFoundError``), so ``except ValueError`` keeps working.
"""


class CanlibError(Exception):
    """Base class of every error canlib raises on purpose."""


class DatasetError(CanlibError, ValueError):
    """A dataset folder, file or file name is missing or malformed."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A dataset root, split folder or annotation file does not exist."""


class ConfigError(CanlibError, ValueError):
    """A configuration field, profile, option or command-line value is invalid."""


class CheckpointError(CanlibError, ValueError):
    """A checkpoint or weights file is missing, corrupt, untrusted or from another config."""


class NonFiniteError(CanlibError, FloatingPointError):
    """A loss, feature or distance became NaN or infinite."""
