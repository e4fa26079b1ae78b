"""A model matrix held on a Dask cluster's workers, one block per partition, read by row number
like an array: only the rows asked for travel to the client (a backtest fold's sample, its
evaluation rows), and the final booster is fitted where the blocks are, by LightGBM's Dask
estimator, so the training snapshots of every deal are never in one process."""

from __future__ import annotations

import warnings
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

# the booster's parameters under the names LightGBM's scikit-learn estimators take (the same
# parameters: passing the native aliases makes LightGBM warn that the defaults are overridden)
SKLEARN_NAMES = {
    "min_data_in_leaf": "min_child_samples",
    "lambda_l2": "reg_lambda",
    "feature_fraction": "colsample_bytree",
    "bagging_fraction": "subsample",
    "bagging_freq": "subsample_freq",
    "seed": "random_state",
}


def _take(block: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return block[rows]


GATHER_BYTES = 256 * 2**20  # of blocks one task reads at once


def _picked(rows: list[np.ndarray], *blocks: np.ndarray) -> np.ndarray:
    """The given rows of a few of this worker's (float32) blocks, laid end to end."""
    out = np.empty((sum(len(r) for r in rows), blocks[0].shape[1]), dtype="float32")
    at = 0
    for block, r in zip(blocks, rows, strict=True):
        out[at : at + len(r)] = block[r]
        at += len(r)
    return out


def _joined(*pieces: np.ndarray) -> pd.DataFrame:
    """A worker's picked rows as one part. A frame, not an array: LightGBM's Dask estimator
    concatenates a worker's parts (an array would be copied even alone) and then reads the
    frame's values in place (named as LightGBM names an array's columns)."""
    out = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
    return pd.DataFrame(out, columns=_names(out.shape[1]), copy=False)


def _groups(sizes: list[int], limit: int) -> list[slice]:
    """Consecutive runs of blocks of at most `limit` bytes together (at least one block each)."""
    runs, start, total = [], 0, 0
    for k, size in enumerate(sizes):
        if k > start and total + size > limit:
            runs.append(slice(start, k))
            start, total = k, 0
        total += size
    return [*runs, slice(start, len(sizes))] if sizes else runs


def _names(n_cols: int) -> list[str]:
    return [f"Column_{j}" for j in range(n_cols)]


class _PartsInOrder:
    """The client as LightGBM's Dask estimator sees it, but telling where parts are in the order
    they were given. The estimator ranks its machines in the order `Client.who_has` lists the
    parts, and that client asks the scheduler about a *set* of keys: their order follows the
    keys' string hashes, which change with every process. The rank decides which machine's rows
    set each feature's bins and in what order histograms are summed, so the same rows on the same
    workers gave one of two models at random (lightgbm issue 3835 is the upstream discussion of
    Dask against local results). Here the machine holding partition 0 is always rank 0."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def who_has(self, futures: list | None = None, **kwargs: Any) -> dict:
        held = self._client.who_has(futures, **kwargs)
        if futures is None:
            return held
        return {f.key: held[f.key] for f in futures}


class PartitionedMatrix:
    """`blocks`: one future per partition, each the partition's rows; `order`: for each row of
    the matrix as the client sees it, its row among the blocks laid end to end."""

    def __init__(self, client: Any, blocks: list, sizes: list[int], n_cols: int, order: np.ndarray | None = None) -> None:
        self.client = client
        self.blocks = blocks
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.n_cols = n_cols
        self.order = order

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.offsets[-1]), self.n_cols

    def __len__(self) -> int:
        return self.shape[0]

    def _locate(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = self.order[index] if self.order is not None else index
        part = np.searchsorted(self.offsets, rows, side="right") - 1
        return part, rows - self.offsets[part]

    def _index(self, index: Any) -> np.ndarray:
        index = np.asarray(index)
        if index.dtype == bool:
            return np.flatnonzero(index)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"rows {index.min()}..{index.max()} of a {len(self)}-row matrix")
        return index.astype(np.int64, copy=False)

    def __getitem__(self, index: Any) -> np.ndarray:
        index = self._index(index)
        part, local = self._locate(index)
        out = np.empty((len(index), self.n_cols), dtype="float32")
        wanted = {int(p): self.client.submit(_take, self.blocks[p], local[part == p], pure=False) for p in np.unique(part)}
        for p, values in zip(wanted, self.client.gather(list(wanted.values())), strict=True):
            out[part == p] = values
        return out

    def fit_booster(self, index: np.ndarray, y: np.ndarray, w: np.ndarray, params: dict, rounds: int, categorical: list[int]) -> lgb.Booster:
        """A booster of exactly `rounds` rounds on the given rows, trained by LightGBM's Dask
        estimator on the workers that hold them (data-parallel: each worker builds histograms of
        its rows, the trees are the same for all). Each worker's rows are gathered into one
        float32 part where they are (no row travels), a few blocks at a time."""
        import dask.array as da
        import dask.dataframe as dd
        from lightgbm.dask import DaskLGBMClassifier

        from engines.runner import home, release_memory

        index = self._index(index)
        part, local = self._locate(index)
        self.client.run(release_memory)  # what building the snapshots left behind: the fit needs the room
        holders = self.client.who_has(self.blocks)
        workers = sorted(self.client.scheduler_info()["workers"])
        by_worker: dict[str, list[int]] = {}
        for p in np.unique(part).tolist():  # in partition order
            built, held = home(workers, p), holders[self.blocks[p].key]
            by_worker.setdefault(built if built in held else sorted(held)[0], []).append(p)  # where it was built, unless it moved
        xs, ys, ws = [], [], []
        block_bytes = np.diff(self.offsets) * self.n_cols * 4
        for worker, parts in by_worker.items():
            mine = [np.flatnonzero(part == p) for p in parts]
            picks = self.client.scatter([local[m] for m in mine], workers=[worker])  # beside the task, not inside its graph
            # a few blocks per task: a task's blocks are all in memory while it runs, and a
            # worker's blocks (mostly spilled to disk) need not fit in its memory at once
            pieces = [
                self.client.submit(_picked, picks[run], *(self.blocks[p] for p in parts[run]), workers=[worker], pure=False)
                for run in _groups([int(block_bytes[p]) for p in parts], GATHER_BYTES)
            ]
            rows = self.client.submit(_joined, *pieces, workers=[worker], pure=False)
            del pieces  # held by the part they make up until it is made, then let go
            order = np.concatenate(mine)
            xs.append(rows)
            for out, values in ((ys, y[order]), (ws, w[order])):  # beside the rows, not inside the task graph
                out.append(da.from_delayed(self.client.scatter(values, workers=[worker]), shape=values.shape, dtype=values.dtype))
        native = {k: v for k, v in params.items() if k not in ("objective", "verbosity")}
        model = DaskLGBMClassifier(
            client=_PartsInOrder(self.client),
            objective="binary",
            n_estimators=rounds,
            verbosity=-1,
            **{SKLEARN_NAMES.get(k, k): v for k, v in native.items()},
        )
        with warnings.catch_warnings():  # the estimator's own n_jobs default, which Dask replaces by each worker's threads
            warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored")
            x = dd.from_delayed(xs, meta=pd.DataFrame(np.empty((0, self.n_cols), dtype="float32"), columns=_names(self.n_cols)), verify_meta=False)
            model.fit(x, da.concatenate(ys), sample_weight=da.concatenate(ws), categorical_feature=categorical)
        return model.to_local().booster_
