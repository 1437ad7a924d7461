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


# Federated learning (issue 13 item 1): each bad input has its own code.
class FederatedError(LearnError):
    """A federated job failed; ``code`` says why (the message names the round, device or value)."""

    code = "LEARN_JOB_FAILED"


class TaskUnknownError(FederatedError, InvalidInputError):
    """``--task`` names no federated task Roost ships (``wine``)."""

    code = "LEARN_TASK_UNKNOWN"


class StrategyUnknownError(FederatedError, InvalidInputError):
    """``--strategy`` names no supported Flower strategy."""

    code = "LEARN_STRATEGY_UNKNOWN"


class RoundsOutOfRangeError(FederatedError, InvalidInputError):
    """``--rounds`` is outside 1..MAX_ROUNDS."""

    code = "LEARN_ROUNDS_OUT_OF_RANGE"


class ParticipantsInvalidError(FederatedError, InvalidInputError):
    """``--min-participants`` is below 1, above the devices of the target, or above MAX_PARTICIPANTS."""

    code = "LEARN_PARTICIPANTS_INVALID"


class TargetEmptyError(FederatedError, InvalidInputError):
    """The target group has no device to train on."""

    code = "LEARN_TARGET_EMPTY"


class DataMissingError(FederatedError, NotFoundError):
    """A device's configured data path does not exist (or is not a readable file)."""

    code = "LEARN_DATA_MISSING"


class TooFewParticipantsError(FederatedError):
    """A round ended with fewer usable updates than ``--min-participants`` (devices left or failed)."""

    code = "LEARN_TOO_FEW_PARTICIPANTS"


class UpdateRejectedError(FederatedError):
    """A device's model update was rejected (corrupt, wrong shape, oversized); the reason is recorded."""

    code = "LEARN_UPDATE_REJECTED"


class FlowerMissingError(FederatedError, NotFoundError):
    """The Flower venv (flower-superlink, flower-supernode, flwr) is not installed: run ``make flower``."""

    code = "LEARN_FLOWER_MISSING"


class FlowerProcessError(FederatedError):
    """A Flower process did not start, exited early, or a run did not end within its timeout."""

    code = "LEARN_FLOWER_FAILED"


class JobStateError(FederatedError, ConflictError):
    """A job state change the state machine does not allow (e.g. RUNNING after SUCCEEDED)."""

    code = "LEARN_JOB_STATE"


class JoinTimeoutError(FederatedError):
    """Fewer SuperNodes than the job expects joined its SuperLink within the join timeout."""

    code = "LEARN_JOIN_TIMEOUT"


# Publishing a job's aggregated model (roost.learn.federated_model, roost.hub.learn_publish).
class JobModelMissingError(FederatedError, NotFoundError):
    """The job ended without the final model file its strategy writes (``model.json`` or ``linear.json``)."""

    code = "LEARN_MODEL_MISSING"


class JobModelInvalidError(FederatedError):
    """The job's final model file does not load, is not the wine task's model, or cannot be made servable."""

    code = "LEARN_MODEL_INVALID"


class ServingComponentError(FederatedError, InvalidInputError):
    """The component a job publishes to is not in the registry (``LEARN_COMPONENT_UNKNOWN``) or its current
    version does not serve a tabular model (``LEARN_COMPONENT_NOT_SERVING``)."""

    code = "LEARN_COMPONENT_UNKNOWN"
