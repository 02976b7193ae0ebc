"""dnastream: HyenaDNA-style long-convolution DNA language models over multi-megabase sequences."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dnastream")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
