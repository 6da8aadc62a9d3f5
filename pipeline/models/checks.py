"""The hyperparameter checks model configs share, for their ``problems()``.

Each function takes the config and the keys to check and returns ``(key, message)`` for every
value out of range (``pipeline.config`` names the key and the variant in the error it raises);
types are checked against the schema before. A config's ``problems()`` adds its own checks to
these.
"""

from __future__ import annotations

from typing import Any, Iterable

Problem = tuple  # (key or keys involved, message)


def _is_count(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def positive(cfg: Any, *keys: str) -> list[Problem]:
    return [(k, f"must be > 0, got {getattr(cfg, k)}") for k in keys if not getattr(cfg, k) > 0]


def non_negative(cfg: Any, *keys: str) -> list[Problem]:
    return [(k, f"must be >= 0, got {getattr(cfg, k)}") for k in keys if not getattr(cfg, k) >= 0]


def counts(cfg: Any, *keys: str) -> list[Problem]:
    """Integers >= 1 (batch sizes, epochs, widths, steps)."""
    return [(k, f"must be an integer >= 1, got {getattr(cfg, k)!r}") for k in keys if not _is_count(getattr(cfg, k), 1)]


def dims(cfg: Any, key: str = "dims") -> list[Problem]:
    """A non-empty list of positive integers (hidden layer widths)."""
    value = getattr(cfg, key)
    if value and all(_is_count(d, 1) for d in value):
        return []
    return [(key, f"must be a non-empty list of positive integers, got {value!r}")]


def fractions(cfg: Any, *keys: str) -> list[Problem]:
    """Values in [0, 1) (dropout and corruption rates)."""
    return [(k, f"must be in [0, 1), got {getattr(cfg, k)}") for k in keys if not 0.0 <= getattr(cfg, k) < 1.0]


def unit_interval(cfg: Any, *keys: str) -> list[Problem]:
    """Values in [0, 1] (mixing weights, probabilities)."""
    return [(k, f"must be in [0, 1], got {getattr(cfg, k)}") for k in keys if not 0.0 <= getattr(cfg, k) <= 1.0]


def one_of(cfg: Any, key: str, allowed: Iterable[str]) -> list[Problem]:
    allowed = list(allowed)
    value = getattr(cfg, key)
    return [] if value in allowed else [(key, f"{value!r} is not allowed; allowed values: {allowed}")]


def noise_bounds(cfg: Any) -> list[Problem]:
    """DiffRec's noise_min and noise_max: 0 < noise_min <= noise_max < 1."""
    if 0 < cfg.noise_min <= cfg.noise_max < 1:
        return []
    return [(("noise_min", "noise_max"), f"need 0 < noise_min <= noise_max < 1, got {cfg.noise_min} and {cfg.noise_max}")]
