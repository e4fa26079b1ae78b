"""The as-of join every point-in-time feature rests on, exact and cheap at any size.

For each query (key, t) it finds the last row of the same key at or before t (or the first
after t). Keys are factorised, times replaced by their rank among all times present, and the
two packed into one int64 (key << 32 | rank) so a single sort and a binary search answer all
queries: no rounding of time, so a row one nanosecond after t is never taken. pandas'
merge_asof does the same job but costs milliseconds of fixed overhead per call, which the
one-opportunity request of the API pays a dozen times.

`SortedRows` does the sorting once for rows that are queried again and again (a table's
history, the statistics in a bundle): each lookup is then two binary searches.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.times import NAT, from_ns, ns

SMALL = 1_000  # values below which a dict codes them faster than pandas (whose fixed cost is tens of µs a call)


def factorize(values, sort: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """`pd.factorize` of text keys (missing: -1; distinct values in order of appearance, or
    sorted), by a dict for the few values of an API request: a one-deal score factorises a
    dozen small arrays, where pandas' fixed cost per call was half a millisecond in all."""
    values = np.asarray(values, dtype=object)
    if len(values) > SMALL:
        return pd.factorize(values, sort=sort)
    code: dict = {}
    codes = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        codes[i] = -1 if v is None or v != v else code.setdefault(v, len(code))
    uniques = np.fromiter(code, dtype=object, count=len(code))
    if sort and len(uniques) > 1:
        order = np.argsort(uniques, kind="stable")
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        return np.where(codes >= 0, rank[np.maximum(codes, 0)], -1), uniques[order]
    return codes, uniques


def positions(
    row_keys: np.ndarray,
    row_times: np.ndarray,
    query_keys: np.ndarray,
    query_times: np.ndarray,
    direction: str = "backward",
    exact: bool = True,
) -> np.ndarray:
    """Index into the rows of each query's match, -1 where there is none.

    Times are int64 (nanoseconds); keys anything pandas can factorise.
    """
    n_rows = len(row_keys)
    if n_rows == 0 or len(query_keys) == 0:
        return np.full(len(query_keys), -1, dtype=np.int64)
    codes, _ = factorize(np.concatenate([np.asarray(row_keys, dtype=object), np.asarray(query_keys, dtype=object)]))
    times = np.concatenate([row_times, query_times])
    _, rank = np.unique(times, return_inverse=True)
    packed = (codes.astype(np.int64) << 32) | rank.astype(np.int64)
    row_packed, query_packed = packed[:n_rows], packed[n_rows:]
    order = np.argsort(row_packed, kind="stable")
    sorted_rows = row_packed[order]
    if direction == "backward":
        pos = np.searchsorted(sorted_rows, query_packed, side="right" if exact else "left") - 1
        found = pos >= 0
    else:
        pos = np.searchsorted(sorted_rows, query_packed, side="left" if exact else "right")
        found = pos < n_rows
    pos = np.clip(pos, 0, n_rows - 1)
    found &= (sorted_rows[pos] >> 32) == (query_packed >> 32)
    return np.where(found, order[pos], -1)


class Codebook:
    """Distinct values and their integer codes. A dict: for the few values of a request it is a
    hundred times faster than a pandas Index lookup, and for millions about as fast."""

    def __init__(self, values: np.ndarray) -> None:
        self.codes_of_rows, uniques = factorize(values)
        self.values = np.asarray(uniques, dtype=object)
        self._code = {v: i for i, v in enumerate(self.values)}

    def __len__(self) -> int:
        return len(self.values)

    def codes(self, values: np.ndarray) -> np.ndarray:
        """The code of each value; -1 for values not in the book."""
        get = self._code.get
        return np.fromiter((get(v, -1) for v in values), dtype=np.int64, count=len(values))


class SortedRows:
    """Rows keyed by non-negative integers, sorted by (key, time) once; `last_at_or_before`
    answers any number of queries with two binary searches each.

    Times become their rank among the rows' distinct times, and a query's time the number of
    distinct row times at or before it, so the comparison stays exact to the nanosecond.
    Among rows with the same key and time, the last in the original order wins.
    """

    def __init__(self, keys: np.ndarray, times: np.ndarray) -> None:
        keys = np.asarray(keys, dtype=np.int64)
        times = np.asarray(times, dtype=np.int64)
        # ranks from one stable (radix) sort of the times; np.unique and a search per row cost
        # ten times more on millions of activities
        by_time = np.argsort(times, kind="stable")
        sorted_times = times[by_time]
        new = np.ones(len(times), dtype=bool)
        new[1:] = sorted_times[1:] != sorted_times[:-1]
        self.distinct_times = sorted_times[new]
        rank = np.empty(len(times), dtype=np.int64)
        rank[by_time] = np.cumsum(new) - 1
        packed = (keys << 32) | rank
        order = np.argsort(packed, kind="stable")  # ties keep their original order
        self.packed = packed[order]
        # positions fit 32 bits below two billion rows: 4 bytes a row less (the statistics' steps
        # are tens of millions of rows at a few million deals)
        self.order = order.astype(np.int32) if len(order) < 2**31 else order

    def last_at_or_before(self, keys: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Original index of each query's row (same key, time <= query time), -1 where none.
        Negative keys (unknown values) match nothing."""
        keys = np.asarray(keys, dtype=np.int64)
        if len(self.packed) == 0 or len(keys) == 0:
            return np.full(len(keys), -1, dtype=np.int64)
        known = keys >= 0
        n_at_or_before = np.searchsorted(self.distinct_times, times, side="right")
        target = (np.where(known, keys, 0) << 32) | n_at_or_before
        pos = np.searchsorted(self.packed, target, side="left") - 1
        safe = np.maximum(pos, 0)
        found = known & (pos >= 0) & ((self.packed[safe] >> 32) == keys)
        return np.where(found, self.order[safe], -1)


def take_array(values: np.ndarray, pos: np.ndarray, fill: object = None) -> np.ndarray:
    """values[pos], with `fill` where pos is -1: numbers become floats (NaN) only when a query
    missed, anything else stays as it is (object arrays get None)."""
    hit = pos >= 0
    every = bool(hit.all())
    if len(values) == 0:
        return np.full(len(pos), np.nan) if values.dtype.kind in "iuf" else np.full(len(pos), fill, dtype=object)
    picked = values[np.where(hit, pos, 0)]
    if every:
        return picked
    if picked.dtype.kind in "iuf":
        return np.where(hit, picked.astype("float64"), np.nan if fill is None else fill)
    picked = picked.astype(object)
    picked[~hit] = fill
    return picked


def take(frame: pd.DataFrame, cols: list[str], pos: np.ndarray) -> pd.DataFrame:
    """Rows at pos (missing where pos is -1), aligned with the queries. Works on the arrays
    beneath the columns: numbers with a miss become floats, times stay UTC, text stays object."""
    n = len(pos)
    hit = pos >= 0
    out = {}
    for col in cols:
        values = frame[col]
        if len(values) == 0:  # no rows at all: missing values of the column's own type
            out[col] = values.iloc[[]].reset_index(drop=True).reindex(range(n))
        elif isinstance(values.dtype, pd.DatetimeTZDtype):
            stamps = np.where(hit, ns(values)[np.where(hit, pos, 0)], NAT)  # NaT where missed
            out[col] = pd.Series(from_ns(stamps))
        elif pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
            out[col] = take_array(values.to_numpy(), pos)
        else:
            out[col] = take_array(values.to_numpy(dtype=object), pos)
    return pd.DataFrame(out, index=range(n))
