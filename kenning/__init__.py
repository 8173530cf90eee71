"""Kenning: recognise instances (a landmark, one particular whale) from pixels, or say it is new."""

__version__ = "0.1.0"
