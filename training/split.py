"""Time split: train on what was known at a date, tune on the period after it, report on the
period after that. A random split of snapshots would leak the future and is never used.

    start ── train ── tune_start ── tune ── test_start ── test (held out) ── end

The tuning window is divided by opportunity (a stable hash of its id), not by time: half of
its deals steer early stopping, the other half fit the calibrator, so the booster never sees
a calibration row and both halves have the same follow-up. Splitting it by time instead would
leave one half right before the cutoff, where win labels are the most censored (only fast
deals have closed, and fast deals are mostly won), which is what calibration can least afford.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from features.errors import InputInvalid

TRAIN_SHARE, TUNE_SHARE = 0.60, 0.20  # the rest (0.20) is held out


@dataclass(frozen=True)
class TimeSplit:
    start: pd.Timestamp
    tune_start: pd.Timestamp  # training snapshots up to here, labels known here
    test_start: pd.Timestamp  # tuning snapshots up to here, labels known here
    end: pd.Timestamp  # held-out period up to here, labels known here

    def slice_of(self, as_of: pd.Series, opportunity_id: pd.Series) -> pd.Series:
        """train, valid (early stopping), calib (calibration) or test, per snapshot."""
        half = pd.util.hash_pandas_object(opportunity_id.astype(str), index=False).to_numpy() % 2
        out = pd.Series("test", index=as_of.index, dtype=object)
        tune = (as_of <= self.test_start).to_numpy()
        out[tune] = np.where(half[tune] == 0, "valid", "calib")
        out[(as_of <= self.tune_start).to_numpy()] = "train"
        return out

    def known_at(self, name: str) -> pd.Timestamp:
        return {"train": self.tune_start, "valid": self.test_start, "calib": self.test_start, "test": self.end}[name]

    def describe(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}


def make_split(start: pd.Timestamp, end: pd.Timestamp, cutoff: pd.Timestamp | None = None) -> TimeSplit:
    """Shares of the snapshot period; with a cutoff, the held-out period starts there."""
    if cutoff is not None:
        if not start < cutoff < end:
            raise InputInvalid(f"--cutoff: found {cutoff}, expected a time between the first snapshot ({start}) and the end of the data ({end})")
        stop, span = cutoff, (cutoff - start) / (TRAIN_SHARE + TUNE_SHARE)
    else:
        span = end - start
        stop = (start + span * (TRAIN_SHARE + TUNE_SHARE)).floor("D")
    return TimeSplit(start, (start + span * TRAIN_SHARE).floor("D"), stop, end)
