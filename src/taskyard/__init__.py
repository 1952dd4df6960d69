"""taskyard: a distributed task scheduler that tracks every run."""

from taskyard.sdk import track

__version__ = "1.0.0"

__all__ = ["__version__", "track"]
