"""The tool's version, at the bottom of the layers so anything may record it."""

__version__ = "0.1.0"
