"""Calibrators: each maps a model's raw probability to a calibrated one, as a small class of its
own (the kinds a backtest may choose: none, Platt's sigmoid on the logit, isotonic steps), with
an optional shift of the logit that sets the served level (`training.fitting.level_shift`).

Stored in a bundle as {"kind", "params"}, the form bundles have always had, so a bundle written
before these classes reads the same."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

import numpy as np

from features.errors import BundleInvalid

EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    clipped = np.clip(p, EPS, 1 - EPS)
    return np.log(clipped / (1 - clipped))


@dataclass(frozen=True, kw_only=True)
class Calibrator:
    level: float = 0.0  # a shift of the logit; 0 in bundles made before the level was set

    kind: ClassVar[str] = ""

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        mapped = self.mapped(np.asarray(raw, dtype=float))
        if not self.level:
            return mapped
        return 1.0 / (1.0 + np.exp(-(_logit(mapped) + self.level)))

    def mapped(self, raw: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def leveled(self, shift: float) -> Calibrator:
        """The same map with its level moved by `shift` on the logit."""
        return replace(self, level=float(shift))

    @property
    def params(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "level"}
        return {**{k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}, **({"level": self.level} if self.level else {})}

    def to_dict(self) -> dict:
        return {"kind": self.kind, "params": self.params}

    @staticmethod
    def from_dict(doc: dict) -> Calibrator:
        kind, params = doc.get("kind"), dict(doc.get("params") or {})
        if kind not in KINDS:
            raise BundleInvalid(f"unknown calibrator kind {kind!r}: a bundle from a newer oppscore?")
        level = float(params.pop("level", 0.0) or 0.0)
        return KINDS[kind](level=level, **{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()})


@dataclass(frozen=True, kw_only=True)
class Identity(Calibrator):
    """The raw probability as it is (rates, and where no backtest could fit a calibrator)."""

    kind: ClassVar[str] = "identity"

    def mapped(self, raw: np.ndarray) -> np.ndarray:
        return raw


@dataclass(frozen=True, kw_only=True)
class Sigmoid(Calibrator):
    """Platt's sigmoid on the logit: slope `a`, intercept `b`."""

    a: float
    b: float
    kind: ClassVar[str] = "sigmoid"

    def mapped(self, raw: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.a * _logit(raw) + self.b)))


@dataclass(frozen=True, kw_only=True)
class Isotonic(Calibrator):
    """Isotonic steps: the thresholds `x` and their values `y`, interpolated."""

    x: tuple[float, ...]
    y: tuple[float, ...]
    kind: ClassVar[str] = "isotonic"

    def mapped(self, raw: np.ndarray) -> np.ndarray:
        return np.interp(raw, self.x, self.y)


KINDS: dict[str, type[Calibrator]] = {c.kind: c for c in (Identity, Sigmoid, Isotonic)}
