"""A whole export is the one-partition case: every command that reads partitions runs the same
code on it, reads and checks it once per command on the local engine, and infers its stage
order when the config names none, as a whole export always could; partitions cannot."""

from __future__ import annotations

import pandas as pd
import pytest

from engines import partitioned, work
from engines.runner import runner
from features.contract import load_export
from features.errors import ConfigInvalid
from features.frame import features_as_of, segment_columns
from features.loading import write_export
from features.partitions import split_export
from features.settings import Settings
from features.times import utc_now


@pytest.fixture()
def whole(tmp_path, small):
    folder = tmp_path / "whole"
    write_export(small.tables, folder)
    return folder


def test_a_whole_export_is_read_once_per_command_on_the_local_engine(whole, small, monkeypatch) -> None:
    reads = []
    monkeypatch.setattr(work, "load_export", lambda folder, settings, now: reads.append(folder) or load_export(folder, settings, now))
    settings, now = Settings(stages=small.stages), utc_now()
    with runner("local") as run:
        t = partitioned.export_end(run, whole, settings, now)
        partitioned.features(run, whole, settings, now, t)
        partitioned.stage_weights(run, whole, settings, now, t)
    assert reads == [whole]
    with runner("local") as run:  # another command reads it again
        partitioned.export_end(run, whole, settings, now)
    assert reads == [whole, whole]


def test_a_whole_export_without_stages_infers_its_order_and_gets_the_same_features(whole, small) -> None:
    settings, now = Settings(), utc_now()  # no [stages]
    validated = load_export(whole, settings, now)
    with runner("local") as run:
        assert work.stages_of(settings, whole, now).config == validated.stages.config
        t = partitioned.export_end(run, whole, settings, now)
        _, got = partitioned.features(run, whole, settings, now, t)
    want, _ = features_as_of(validated.tables, validated.stages, segment_columns(settings, validated.tables), t)
    want = want.sort_values("opportunity_id", kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-9)


def test_partitions_without_stages_are_refused_by_name(tmp_path, small) -> None:
    split_export(small.tables, tmp_path / "parts", 2)
    with runner("local") as run, pytest.raises(ConfigInvalid, match=r"needs \[stages\]"):
        partitioned.first_pass(run, tmp_path / "parts", Settings(), utc_now(), small.tables.end)
