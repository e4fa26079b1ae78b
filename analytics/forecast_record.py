"""The forecast beside its replayed record (issue 40): which method to plan on, and whether its
level has moved since it was last checked.

A forecast's own backtest replays past periods with today's model, whose training saw those
periods: its record there is better than it will be, and on a young org it listed first a model
forecast that then came in at a twenty-fifth of what was won. `oppscore replay` records, at each
past date, the forecast each method made with only what was known then; once their periods
have passed, those are the honest record. So the methods are ordered by it when it holds enough
periods, and a method whose forecast now lies further from its last replayed one than that
replay's own P10–P90 range is named: its level moved, and the record no longer vouches for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analytics.forecast import backtest_summary
from analytics.track_record import judged_forecasts

MIN_REPLAYED = 3  # judged replayed periods a method needs before its replayed record orders the forecast
REPLAYED = "replay"  # the score history's source of a replayed forecast


@dataclass(frozen=True)
class ReplayedRecord:
    """Per method, how its replayed forecasts did (`periods`, `mean_abs_error`,
    `expected_over_actual`, `p10_p90_coverage`), best first; and each method's last replayed
    forecast (`as_of`, `period_start`, `period_end`, `expected`, `p10`, `p90`)."""

    summary: pd.DataFrame
    last: pd.DataFrame

    @classmethod
    def of(cls, forecasts: pd.DataFrame, tables, stages, known_at: pd.Timestamp) -> ReplayedRecord:
        """From the score history's forecasts (`ScoreHistory.forecasts`), judged against the export."""
        mine = forecasts[forecasts["source"] == REPLAYED] if len(forecasts) else forecasts
        if not len(mine):
            return cls(_empty_summary(), pd.DataFrame(columns=["method", "as_of", "period_start", "period_end", "expected", "p10", "p90"]))
        judged = judged_forecasts(mine, tables, stages, known_at)
        # the same record a backtest's periods get (`analytics.forecast.backtest_summary`), best first
        summary = backtest_summary(judged.assign(error=judged["expected"] - judged["actual"], inside=judged["inside_p10_p90"])) if len(judged) else _empty_summary()
        last = mine.sort_values("as_of", kind="stable").groupby("method").tail(1)[["method", "as_of", "period_start", "period_end", "expected", "p10", "p90"]]
        return cls(summary, last.reset_index(drop=True))

    @property
    def enough(self) -> bool:
        return bool(len(self.summary)) and int(self.summary["periods"].max()) >= MIN_REPLAYED

    def in_order(self, methods: pd.DataFrame) -> pd.DataFrame:
        """The forecast's methods, the best on the replayed periods first (as given without enough)."""
        if not self.enough:
            return methods
        ranked = self.summary[self.summary["periods"] >= MIN_REPLAYED]
        rank = {m: k for k, m in enumerate(ranked["method"])}
        return methods.assign(_rank=methods["method"].map(rank).fillna(len(rank))).sort_values("_rank", kind="stable").drop(columns="_rank").reset_index(drop=True)

    def best(self) -> list[str]:
        if not self.enough:
            return []
        best = self.summary[self.summary["periods"] >= MIN_REPLAYED].iloc[0]
        return [f"best on the {int(best['periods'])} replayed periods (each forecast with only what was known then): {best['method']} "
                f"(off by {best['mean_abs_error']:,.0f} on average, {best['expected_over_actual']:.2f}× what was won; "
                f"its P10–P90 held the won amount in {best['p10_p90_coverage']:.0%})"]


def level_moves(methods: pd.DataFrame, period: tuple[pd.Timestamp, pd.Timestamp], last: pd.DataFrame) -> list[str]:
    """Each method whose expected amount per day of its period moved, since its last replayed
    forecast, by more than that forecast's own P10–P90 range per day: a level that shifted
    (a retrain, a calibrator, a pipeline that changed shape), which its record cannot vouch for."""
    days = max((period[1] - period[0]) / pd.Timedelta(days=1), 1.0)
    out = []
    before = last.set_index("method")
    for r in methods.itertuples():
        if r.method not in before.index:
            continue
        b = before.loc[r.method]
        b_days = max((b["period_end"] - b["period_start"]) / pd.Timedelta(days=1), 1.0)
        now, then, spread = r.expected / days, b["expected"] / b_days, (b["p90"] - b["p10"]) / b_days
        if abs(now - then) > max(spread, 1e-9):
            out.append(f"{r.method}: its level moved since the last replay ({pd.Timestamp(b['as_of']):%Y-%m-%d}): {now * days:,.0f} now against "
                       f"{then * days:,.0f} then for a period as long, more than that forecast's own P10–P90 range ({spread * days:,.0f}); "
                       f"its replayed record does not vouch for it: replay again (`oppscore replay`) before planning on it")
    return out


def _empty_summary() -> pd.DataFrame:
    return pd.DataFrame(columns=["method", "periods", "mean_abs_error", "expected_over_actual", "p10_p90_coverage"])


@dataclass(frozen=True)
class Ordered:
    """A forecast's methods in the order to plan by, and what is said of them: the best on the
    replayed periods, each level that moved since its last replay, and today's backtest's verdict."""

    methods: pd.DataFrame
    best: list[str]
    moved: list[str]
    backtest: list[str]
    range: list[str] = ()  # what the P10-P90 carry

    @property
    def said(self) -> list[str]:
        return self.best + self.moved + self.backtest + list(self.range)


def range_said(level: dict | None) -> list[str]:
    """The level's movement the range carries, in words (`analytics.forecast.level_spread`)."""
    if not level:
        return []
    sd = level["spread"]
    where = (f"measured over {level['months']} months" if level.get("measured") is not None else "no two months to measure it on: the prior")
    return [f"P10–P90 carry the pipeline's month-to-month level as well as each deal's chance: a month's level moves by ×{np.exp(-sd):.2f}–×{np.exp(sd):.2f} "
            f"in the odds (one sd, {where})"]


def ordered(made: pd.DataFrame, window: tuple[pd.Timestamp, pd.Timestamp], summary: pd.DataFrame, replayed: ReplayedRecord, level: dict | None = None) -> Ordered:
    """One forecast judged the one way the CLI and the page both show it: by its replayed record
    when that holds enough periods (out of sample), else by today's backtest (whose periods the
    model's training saw, and which is labelled so when the replayed record leads)."""
    from analytics.forecast import in_order, verdict

    methods = replayed.in_order(made) if replayed.enough else in_order(made, summary)
    backtest = [f"in today's backtest: {line}" if replayed.enough else line for line in verdict(summary)]
    return Ordered(methods, replayed.best(), level_moves(methods, window, replayed.last), backtest, range_said(level))
