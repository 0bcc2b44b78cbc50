"""Errors the engine raises. Each message says what was wrong and what to do about it."""


class FIAError(Exception):
    """Base class: every error the engine raises on purpose."""


class InvalidInputError(FIAError, ValueError):
    """A parameter or argument is out of range or empty."""


class UnsupportedArchitectureError(FIAError):
    """The model has no FIA target layers (no UNet transformer FFN), or is of a kind FIA does not cover."""


class MaskMismatchError(FIAError):
    """A mask (or saliency) was made for a model with other target layers."""


class CorruptMaskError(FIAError):
    """A mask file cannot be read, or its contents are inconsistent."""


class OutputPathError(InvalidInputError):
    """An output cannot be written where asked: it exists, is a folder, lies under a file, or is read-only."""
