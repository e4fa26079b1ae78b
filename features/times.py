"""Time in one representation: UTC, nanoseconds, naive meaning UTC (the contract's rule).

Nothing below the shell and the service asks the clock: they decide "now" once (per command,
per request) and pass it down, so every result is a function of its inputs and a backtest can
replay any moment.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TS_NS = pd.DatetimeTZDtype("ns", "UTC")  # the canonical time dtype of every table
NAT = np.iinfo(np.int64).min  # NaT among int64 nanoseconds
DAY_NS = 86_400 * 10**9


def to_utc(t: pd.Timestamp | str) -> pd.Timestamp:
    """A timestamp in UTC, nanoseconds; naive means UTC. None is refused: 'now' is the caller's."""
    if t is None:
        raise TypeError("a time is required (the shell or the request decides what 'now' is)")
    ts = pd.Timestamp(t)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.as_unit("ns")


def utc_now() -> pd.Timestamp:
    """The current time; read by the shell and the service only."""
    return pd.Timestamp.now(tz="UTC").as_unit("ns")


def ns(times: pd.Series) -> np.ndarray:
    """Nanoseconds since the epoch (UTC), without going through Timestamp objects."""
    series = pd.Series(times) if not isinstance(times, pd.Series) else times
    if series.dtype == TS_NS:  # the canonical dtype: read the integers beneath (the .dt accessor costs 100 µs)
        return np.asarray(series.array.asi8)
    if not isinstance(series.dtype, pd.DatetimeTZDtype):
        series = pd.to_datetime(series, utc=True)
    return np.asarray(series.dt.as_unit("ns").array.asi8)


def from_ns(values: np.ndarray) -> pd.DatetimeIndex:
    """The inverse of `ns`: int64 nanoseconds (NAT: NaT) as UTC times, without Timestamp objects."""
    return pd.DatetimeIndex(np.asarray(values, dtype=np.int64).view("datetime64[ns]")).tz_localize("UTC")
