"""The strict base of every typed config and record: unknown keys are errors (a typo never passes silently)
and values are immutable once parsed."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A pydantic model that forbids unknown fields and is frozen (hashable, never changed after parsing)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
