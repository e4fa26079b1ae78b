"""The feature catalogue and the computations agree: every computed feature has an entry (its
family, reason group, sentence and helpful direction) and every entry a computation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from features import catalogue
from features.frame import Points, computed, feature_arrays, make_spec, model_matrix
from features.pit_stats import PointInTimeStats
from features.stages import StageOrder
from features.tables import Tables
from scoring.explain import factor_of, sentence
from training.sufficiency import families


def _vocabularies(small) -> list:
    stages = StageOrder(small.stages)
    with_history = make_spec(small.tables, stages, small.segments)
    without_history = make_spec(small.tables, stages, small.segments[:1])
    without_history.field_history = False
    no_activities = Tables(small.tables.opportunities, small.tables.stage_history, small.tables.activities.iloc[:0])
    return [(small.tables, with_history), (small.tables, without_history), (no_activities, make_spec(no_activities, stages, []))]


def test_every_computed_feature_has_an_entry_and_every_entry_a_computation(small) -> None:
    for tables, spec in _vocabularies(small):
        stats = PointInTimeStats(spec.stat_keys).fit(tables, spec.stages)
        ids = tables.opportunities["opportunity_id"].iloc[:20]
        points = pd.DataFrame({"opportunity_id": ids, "as_of": tables.end})
        made = computed(tables, Points.of(tables, points), spec, stats)
        assert sorted(made) == sorted(spec.columns), (set(made) ^ set(spec.columns))
        assert len(spec.columns) == len(set(spec.columns))


def test_every_entry_says_something_of_any_value(small) -> None:
    """Each entry belongs to a family and a readable factor and writes a sentence for a value, a
    missing value and with or without won deals' medians."""
    _, spec = _vocabularies(small)[0]
    grouped = families(spec)
    assert sorted(c for cols in grouped.values() for c in cols) == sorted(spec.columns)
    assert set(grouped) == set(catalogue.FAMILIES)
    row = {c: 3.0 for c in spec.columns} | {"stage": spec.stages.open[0], **{c: "x" for c in spec.segment_columns}}
    for name, entry in spec.features.items():
        assert entry.helps in (-1, 0, 1) and entry.family in catalogue.FAMILIES
        assert factor_of(name, spec) == entry.factor and entry.factor.strip()
        for value in (0.0, 1.0, 12.4, math.nan) if name not in spec.categorical else ("x", None):
            for reference in ({}, {c: 2.0 for c in spec.columns}):
                said = sentence(name, row | {name: value}, reference, spec)
                assert said and "nan" not in said.split(), (name, value, said)


def test_a_name_given_twice_is_refused_with_the_names() -> None:
    with pytest.raises(ValueError, match=r"\['age_days'\] come twice"):
        catalogue.entries(("age_days",), (), (), False)


def test_a_planted_activity_signal_is_learned_in_the_direction_the_catalogue_says_helps(medium, trained) -> None:
    """The generator's deals win more often with more activity and fewer idle days: the served
    booster's contributions move the way the catalogue's `helps` says for those features."""
    bundle = trained.bundle
    assert bundle.models["win"].booster is not None, "the medium export (2,500 deals) serves a booster"
    spec = bundle.spec
    points = trained.held_out.points.iloc[:3000]
    x = model_matrix(feature_arrays(medium.tables, Points.of(medium.tables, points), spec, bundle.stats), spec)
    contributions = bundle.models["win"].contributions(x)
    for name in ("activities_30d", "days_since_activity"):
        j = spec.columns.index(name)
        rho = pd.Series(x[:, j]).corr(pd.Series(contributions[:, j]), method="spearman")
        assert np.sign(rho) == spec.features[name].helps, (name, rho)
