"""Errors raised for user mistakes (bad files, bad configs): caught by the CLI and shown without a traceback."""

from __future__ import annotations


class PainvrlInputError(ValueError):
    """A user-supplied file, field or value is wrong; the message names it and says what is wrong."""
