"""taskyard: a distributed task scheduler that tracks every run."""

__version__ = "1.0.0"
