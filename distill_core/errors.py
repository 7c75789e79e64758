"""User-facing errors: the CLI prints these as one line and exits with code 2."""


class DetKDSError(Exception):
    """A problem with the user's input (config, checkpoint, data, storage, cluster address)."""


class ConfigError(DetKDSError):
    """A config file or a config key is missing or invalid."""


class CheckpointError(DetKDSError):
    """A checkpoint is missing, unreadable or does not match its config."""


class DataError(DetKDSError):
    """A dataset folder or annotation file is missing or malformed."""


class TrainingError(DetKDSError):
    """A training run diverged (a non-finite loss): stopped early rather than training NaN weights to the end."""
