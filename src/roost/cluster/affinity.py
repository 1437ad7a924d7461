"""Node affinity with Kubernetes' semantics, evaluated against a node's labels.

``required`` is one node selector term: every expression must hold (Kubernetes ORs several terms;
one term covers the original's ``machine NotIn [nano]`` and is what the Kubernetes backend writes
back). ``preferred`` terms each carry a weight (1-100) added to a node's score when all of the
term's expressions hold. Operators: In, NotIn, Exists, DoesNotExist, Gt, Lt (as Kubernetes: NotIn
and DoesNotExist hold on a node without the label; Gt/Lt compare integers).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Operator = Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]


class Expression(BaseModel):
    """``{key, operator, values}``: one match expression."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    key: str = Field(..., min_length=1, max_length=317)
    operator: Operator
    values: tuple[str, ...] = Field(default=(), max_length=64)

    @model_validator(mode="after")
    def _values_fit_operator(self) -> Expression:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} of key {self.key!r} needs at least one value")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} of key {self.key!r} takes no values")
        if self.operator in ("Gt", "Lt"):
            if len(self.values) != 1:
                raise ValueError(f"operator {self.operator} of key {self.key!r} takes exactly one value")
            try:
                int(self.values[0])
            except ValueError:
                raise ValueError(f"operator {self.operator} of key {self.key!r} needs an integer value, "
                                 f"not {self.values[0]!r}") from None
        return self

    def holds(self, labels: Mapping[str, Any]) -> bool:
        present = self.key in labels
        value = _text(labels[self.key]) if present else None
        if self.operator == "In":
            return present and value in self.values
        if self.operator == "NotIn":
            return not present or value not in self.values
        if self.operator == "Exists":
            return present
        if self.operator == "DoesNotExist":
            return not present
        try:
            number = int(value) if value is not None else None
        except ValueError:
            return False
        if number is None:
            return False
        return number > int(self.values[0]) if self.operator == "Gt" else number < int(self.values[0])


class Preference(BaseModel):
    """A preferred term: ``weight`` (1-100) when every expression of ``match`` holds."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    weight: int = Field(..., ge=1, le=100)
    match: tuple[Expression, ...] = Field(..., min_length=1, max_length=32)


class Affinity(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    required: tuple[Expression, ...] = Field(default=(), max_length=32)
    preferred: tuple[Preference, ...] = Field(default=(), max_length=32)

    def allows(self, labels: Mapping[str, Any]) -> bool:
        """Whether the node may run a replica (every required expression holds)."""
        return all(e.holds(labels) for e in self.required)

    def score(self, labels: Mapping[str, Any]) -> int:
        """The sum of the weights of the preferred terms that hold."""
        return sum(p.weight for p in self.preferred if all(e.holds(labels) for e in p.match))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


__all__ = ["Affinity", "Expression", "Operator", "Preference"]
