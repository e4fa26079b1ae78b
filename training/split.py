"""Time split: train on what was known at a date, tune and calibrate on later slices, report on
the period after. A random split of snapshots would leak the future and is never used."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

TRAIN_SHARE, VALID_SHARE, CALIB_SHARE = 0.60, 0.10, 0.10  # the rest (0.20) is held out


@dataclass(frozen=True)
class TimeSplit:
    start: pd.Timestamp
    valid_start: pd.Timestamp  # training snapshots up to here, labels known here
    calib_start: pd.Timestamp  # early-stopping slice up to here
    test_start: pd.Timestamp  # calibration slice up to here; labels of both known here
    end: pd.Timestamp  # held-out period up to here, labels known here

    def slice_of(self, as_of: pd.Series) -> pd.Series:
        bins = [self.valid_start, self.calib_start, self.test_start]
        out = pd.Series("test", index=as_of.index, dtype=object)
        out[as_of <= bins[2]] = "calib"
        out[as_of <= bins[1]] = "valid"
        out[as_of <= bins[0]] = "train"
        return out

    def known_at(self, name: str) -> pd.Timestamp:
        return {"train": self.valid_start, "valid": self.test_start, "calib": self.test_start, "test": self.end}[name]

    def describe(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}


def make_split(start: pd.Timestamp, end: pd.Timestamp, cutoff: pd.Timestamp | None = None) -> TimeSplit:
    """Shares of the snapshot period; with a cutoff, the held-out period starts there."""
    if cutoff is not None:
        if not start < cutoff < end:
            raise ValueError(f"--cutoff: found {cutoff}, expected a time between the first snapshot ({start}) and the end of the data ({end})")
        span = cutoff - start
        share = TRAIN_SHARE + VALID_SHARE + CALIB_SHARE
        valid_start = start + span * (TRAIN_SHARE / share)
        calib_start = start + span * ((TRAIN_SHARE + VALID_SHARE) / share)
        return TimeSplit(start, valid_start.floor("D"), calib_start.floor("D"), cutoff, end)
    span = end - start
    return TimeSplit(
        start,
        (start + span * TRAIN_SHARE).floor("D"),
        (start + span * (TRAIN_SHARE + VALID_SHARE)).floor("D"),
        (start + span * (TRAIN_SHARE + VALID_SHARE + CALIB_SHARE)).floor("D"),
        end,
    )
