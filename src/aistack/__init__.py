"""aistack: hand a coding task to a local AI and get back verified work."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("aistack")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"
