"""Errors of ``roost.learn``: model lightening and its validation gates.

Bad input (a model that does not load, validation data of the wrong shape, a transformation that
does not apply, a malformed gate) is an :class:`~roost.errors.InvalidInputError`: fix the command.
A candidate that misses its gate is not an error of the command (``roost model optimize`` reports
it and exits 1); publishing such a variant is refused with :class:`GateFailedError`.
"""

from __future__ import annotations

from roost.errors import ConflictError, InvalidInputError, NotFoundError, Retryable, RoostError

__all__ = [
    "CentreUnreachableError",
    "FeatureMismatchError",
    "FilterError",
    "GateFailedError",
    "LearnError",
    "LighteningError",
    "ModelLoadError",
    "ModelMissingError",
    "NotApplicableError",
    "OutputExistsError",
    "ReplicasExhaustedError",
    "ValidationDataError",
    "VariantError",
]


class LearnError(RoostError):
    """Base class of ``roost.learn`` errors."""

    code = "LEARN_ERROR"


class ModelMissingError(LearnError, NotFoundError):
    """The model file (or image-model folder) to lighten does not exist."""

    code = "MODEL_MISSING"


class ModelLoadError(LearnError, InvalidInputError):
    """The file exists but is not a model Roost can load (not a model, corrupt, unknown kind)."""

    code = "MODEL_UNREADABLE"


class ValidationDataError(LearnError, InvalidInputError):
    """The validation data does not fit the model; ``code`` says how (column missing, extra, ...)."""

    code = "VALIDATION_DATA_INVALID"


class NotApplicableError(LearnError, InvalidInputError):
    """The transformation is unknown or does not apply to this kind of model; ``code`` says which."""

    code = "LIGHTEN_NOT_APPLICABLE"


class OutputExistsError(LearnError, ConflictError):
    """The output folder exists and is not empty; nothing was overwritten."""

    code = "LIGHTEN_OUTPUT_EXISTS"


class LighteningError(LearnError):
    """A transformation ran and failed (the quantiser, the compiler); the message carries why."""

    code = "LIGHTEN_FAILED"


class VariantError(LearnError, InvalidInputError):
    """A variant folder has no valid ``variant.json``, or its model file does not match the record."""

    code = "VARIANT_INVALID"


class GateFailedError(LearnError, ConflictError):
    """The variant's validation report did not pass its gate: it is not publishable."""

    code = "GATE_FAILED"


# -- joint and parallel inference (roost.learn.hard_examples, .joint, .parallel) -------------------


class FilterError(LearnError, InvalidInputError):
    """A hard-example filter is unknown (``FILTER_UNKNOWN``) or its threshold is out of range
    (``FILTER_THRESHOLD_INVALID``), or the edge model gives no probabilities to filter on."""

    code = "FILTER_UNKNOWN"


class FeatureMismatchError(LearnError, InvalidInputError):
    """Two models (the edge and the centre, or two replicas), or the data and a model, disagree on the
    features; the message names both lists."""

    code = "FEATURES_MISMATCH"


class CentreUnreachableError(Retryable, LearnError):
    """Joint inference could not reach the centre model (connect, refusal, socket lost, timeout) and
    the caller asked for the centre to be required; retry later."""

    code = "CENTRE_UNREACHABLE"


class ReplicasExhaustedError(Retryable, LearnError):
    """Parallel inference lost every replica before all windows were answered; the message names them."""

    code = "PARALLEL_REPLICAS_LOST"
