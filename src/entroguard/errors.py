"""Errors entroguard raises on bad input: one clear message that says what to do."""

from __future__ import annotations


class EntroguardError(Exception):
    """Base class of entroguard's user-facing errors."""


class InputError(EntroguardError, ValueError):
    """Images of the wrong type, shape or range for a model."""


class DatasetNotFoundError(EntroguardError, FileNotFoundError):
    """A dataset is not where it was looked for; the message says how to install it."""


class CheckpointError(EntroguardError, ValueError):
    """A checkpoint that is missing, corrupt, or belongs to another model."""


class ModelMismatchError(EntroguardError, ValueError):
    """A packet coded by another model (fingerprint, prior or latent shape differ)."""


class ResultStoreError(EntroguardError, RuntimeError):
    """A campaign's results store cannot be used: unreadable, or in use by another run."""
