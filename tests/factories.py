"""Test data: valid visit events and signed messages built from the synthetic clinic."""

from __future__ import annotations

import copy
import random
import uuid
from datetime import datetime
from typing import Any

from synthetic.population import Citizen, make_citizen, make_visit


def citizen(seed: int = 7, province: str = "079") -> Citizen:
    """An invented citizen."""
    return make_citizen(random.Random(seed), province)


def visit(seed: int = 7, *, person: Citizen | None = None, facility: str = "79001", sequence: int = 1,
          admitted: datetime = datetime(2026, 3, 15, 8, 30), version: int = 1, **changes: Any) -> dict[str, Any]:
    """A valid VisitEvent record, with top-level fields overridden by changes."""
    rng = random.Random(seed)
    event = make_visit(rng, person or citizen(seed), facility, sequence, admitted, version)
    event["event_id"] = str(uuid.uuid4())  # every call is another event, even with the same seed
    event.update(changes)
    return event


def with_patient(event: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of event with patient fields overridden."""
    changed = copy.deepcopy(event)
    changed["patient"].update(changes)
    return changed
