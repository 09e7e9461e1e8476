"""How each department misbehaves: its latency and its faults, and which query gets a fault."""

from __future__ import annotations

import hashlib
import random
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FaultKind = Literal["timeout", "http_500", "malformed_json", "wrong_schema", "slow_drip"]


class Latency(BaseModel):
    """`{"fixed": 50}` or `{"uniform": [10, 200]}`, in milliseconds."""

    model_config = ConfigDict(extra="forbid")

    fixed: int | None = Field(default=None, ge=0, le=600_000)
    uniform: tuple[int, int] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Latency:
        if (self.fixed is None) == (self.uniform is None):
            raise ValueError('latency_ms takes exactly one of "fixed" or "uniform"')
        if self.uniform is not None:
            low, high = self.uniform
            if not 0 <= low <= high <= 600_000:
                raise ValueError("latency_ms.uniform must be [low, high] with 0 <= low <= high")
        return self

    def seconds(self, rng: random.Random) -> float:
        if self.uniform is not None:
            return rng.uniform(*self.uniform) / 1000
        return (self.fixed or 0) / 1000


class Behaviour(BaseModel):
    """One department's latency and fault; `fault_rate` is the share of queries that fault."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: Latency | None = None
    fault: FaultKind | None = None
    fault_rate: float = Field(default=1.0, ge=0.0, le=1.0)
    # How long a slow drip takes to deliver the whole body.
    drip_seconds: float = Field(default=3.0, gt=0, le=60)


class Behaviours:
    """The behaviour of every department, changed at run time through the admin endpoint."""

    def __init__(self, initial: dict[str, Behaviour], *, seed: int | None) -> None:
        self._by_department = dict(initial)
        self._seed = seed
        self._rng = random.Random(seed)

    def get(self, department: str) -> Behaviour:
        return self._by_department.get(department) or Behaviour()

    def set(self, department: str, behaviour: Behaviour) -> None:
        self._by_department[department] = behaviour

    def reset(self, department: str) -> None:
        self._by_department.pop(department, None)

    def delay_seconds(self, department: str) -> float:
        latency = self.get(department).latency_ms
        return latency.seconds(self._rng) if latency else 0.0

    def fault_for(self, department: str, identity_number: str) -> FaultKind | None:
        """The fault this query gets, if any.

        With a seed the choice depends only on (seed, department, identity number), so a test
        knows that the same households fail on every run; without one it is random.
        """
        behaviour = self.get(department)
        if behaviour.fault is None or behaviour.fault_rate <= 0:
            return None
        if self._seed is None:
            roll = self._rng.random()
        else:
            key = f"{self._seed}|{department}|{identity_number}".encode()
            roll = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64
        return behaviour.fault if roll < behaviour.fault_rate else None
