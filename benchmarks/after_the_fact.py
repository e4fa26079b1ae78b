"""Win probabilities on an org that records after the fact, judged by what happened later.

    python benchmarks/after_the_fact.py [--n 500] [--span-days 540] [--seeds 1 2 3] [--days 150 180 210 240] [--logging late-losses]

The protocol of issue 28 (measured there on a real Salesforce org): a generated export whose
losses are recorded weeks to months late, many in bulk clean-ups, and whose wins are entered at
a late stage days before they close (`oppscore generate --logging late-losses`). It is cut at
four monthly dates (`--days` after its first deal), each as it was known then
(`Tables.as_of`); at each, oppscore trains on the cut as `oppscore train` does and scores the
deals open then, and each is set against what happened by the export's end (won: 1, anything
else: 0). Beside it, on the same rows, the baselines a team would otherwise use, each learned
from the same cut:
- configured weights: the CRM's stage probabilities;
- stage rate: each stage's win rate among deals closed as known then (the usual data-driven
  stage weights, `analytics.stage_weights`);
- stage rate, won within 30 days: each stage's share of weekly snapshots (as known then, 30 days
  old at least) won within 30 days (the issue's scale reference);
- logistic regression: oppscore's features of weekly snapshots, labelled with the outcome as
  known then (closed deals only).
Pooled over the dates of every seed: AUC, log loss, ECE; per date, the AUC and the mean
predicted beside the realised rate. Then each method's forecast of the amount won in the 30
days after each date (P10-P90 from `analytics.forecast`), against what was won.

Targets (issue 28): oppscore's pooled log loss below every baseline's and <= 0.45; its pooled
AUC within 0.03 of its mean per-date AUC (levels consistent across dates).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

METHODS = ("oppscore", "configured weights", "stage rate", "stage rate, won within 30 days", "logistic regression")


def _stage_of(tables, stages, points: pd.DataFrame) -> pd.Series:
    from features.frame import stage_state

    return stage_state(tables, stages, points)["stage_now"].reset_index(drop=True)


def _within_rate(known, stages, settings, at: pd.Timestamp, stage_now: pd.Series, days: int = 30) -> np.ndarray:
    """Per stage, the share of weekly snapshots (old enough to tell) won within `days`, as known at `at`."""
    from features.snapshots import snapshot_points

    points = snapshot_points(known, stages, every_days=settings.snapshots.every_days, until=at - pd.Timedelta(days=days))
    if points.empty:
        return np.full(len(stage_now), np.nan)
    stage = _stage_of(known, stages, points)
    hist = known.stage_history
    won_at = hist[hist["stage"] == stages.config.won].groupby("opportunity_id")["entered_at"].min()
    when = points["opportunity_id"].map(won_at)
    won = ((when > points["as_of"]) & (when <= points["as_of"] + pd.Timedelta(days=days))).to_numpy()
    frame = pd.DataFrame({"stage": stage.to_numpy(), "won": won})
    overall = frame["won"].mean()
    rates = frame.groupby("stage")["won"].agg(["sum", "size"])
    rate = (rates["sum"] + 2 * overall) / (rates["size"] + 2)  # two snapshots' worth of the overall rate
    return stage_now.map(rate).fillna(overall).to_numpy(dtype=float)


def _logistic(known, stages, settings, at: pd.Timestamp, points: pd.DataFrame) -> np.ndarray:
    """A logistic regression on oppscore's features of weekly snapshots, labelled with the outcome
    as known at `at` (what a data scientist would try first)."""
    from features.frame import build_features, make_spec, model_matrix, segment_columns
    from features.pit_stats import PointInTimeStats
    from features.snapshots import snapshot_points
    from features.stays import final_states
    from training.fitting import Rows, fit_linear

    spec = make_spec(known, stages, segment_columns(settings, known))
    stats = PointInTimeStats(spec.stat_keys).fit(known, stages)
    snaps = snapshot_points(known, stages, every_days=settings.snapshots.every_days, until=at)
    outcome = snaps["opportunity_id"].map(final_states(known.stage_history, stages)["state"])
    closed = outcome.isin(["won", "lost"]).to_numpy()
    if closed.sum() < 2 or outcome[closed].nunique() < 2:
        return np.full(len(points), np.nan)

    def matrix(p: pd.DataFrame) -> np.ndarray:
        frame = build_features(known, p.reset_index(drop=True), spec, stats)
        return model_matrix({c: frame[c].to_numpy(dtype=object if c in spec.categorical else "float64") for c in spec.columns}, spec)

    train = snaps[closed].reset_index(drop=True)
    y = (outcome[closed] == "won").to_numpy(dtype=float)
    model = fit_linear(Rows(matrix(train), y, np.ones(len(y)), train["opportunity_id"].to_numpy(dtype=object)), spec)
    return model.probability(matrix(points))


def _forecasts(full, known, stages, bundle, at: pd.Timestamp) -> list[dict]:
    from analytics.forecast import actual_won, forecast, methods_for

    period = (at, at + pd.Timedelta(days=30))
    made = forecast(known, stages, period, methods_for(stages, bundle), as_of=at, sims=2000)
    actual = actual_won(full, stages, period, at)
    return [{"method": r.method, "expected": r.expected, "p10": r.p10, "p90": r.p90, "actual": actual} for r in made.methods.itertuples()]


def one_date(g, at: pd.Timestamp) -> tuple[pd.DataFrame, list[dict], dict]:
    """oppscore and the baselines on the deals open at `at`, each learned from the export as known then."""
    from analytics.stage_weights import StageWeights
    from features.frame import open_points
    from features.settings import SegmentConfig, Settings
    from features.stages import StageOrder
    from features.stays import final_states
    from scoring.score import score_points
    from training.pipeline import train

    stages, settings = StageOrder(g.stages), Settings(segments=SegmentConfig(columns=g.segments))
    known = g.tables.as_of(at, stages)
    points = open_points(known, stages, at)
    start = time.perf_counter()
    result = train(known, stages, settings)
    took = time.perf_counter() - start
    stage_now = _stage_of(known, stages, points)
    final = final_states(g.tables.stage_history, stages)["state"]
    rows = pd.DataFrame({"opportunity_id": points["opportunity_id"], "as_of": at, "won": points["opportunity_id"].map(final).eq("won").to_numpy(dtype=float)})
    rows["oppscore"] = score_points(result.bundle, known, points, with_factors=False)["win_probability"].to_numpy()
    rows["configured weights"] = stage_now.map(dict(zip(stages.open, g.stages.configured_weights, strict=True))).to_numpy(dtype=float)
    rows["stage rate"] = StageWeights().fit(known, stages, at).weight_for(stage_now)
    rows["stage rate, won within 30 days"] = _within_rate(known, stages, settings, at, stage_now)
    rows["logistic regression"] = _logistic(known, stages, settings, at, points)
    served = result.bundle.metadata["served"]["win"]
    info = {"train s": took, "served": f"{served['model']} ({served['calibrator']})", "label": result.bundle.metadata.get("win_label", {}).get("said", "final outcome")}
    return rows, _forecasts(g.tables, known, stages, result.bundle, at), info


def _scored(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    from analytics.metrics import metrics

    ok = np.isfinite(p)
    return metrics(y[ok], p[ok]) | {"missing": int((~ok).sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--span-days", type=int, default=540)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--days", type=int, nargs="+", default=[150, 180, 210, 240], help="the dates, as days after the export's first deal")
    parser.add_argument("--logging", default="late-losses")
    args = parser.parse_args()

    from features.synthetic import generate

    rows, forecasts, infos = [], [], []
    for seed in args.seeds:
        g = generate(n=args.n, seed=seed, logging=args.logging, span_days=args.span_days)
        first = g.tables.opportunities["created_at"].min().floor("D")
        for k, days in enumerate(args.days):
            at = first + pd.Timedelta(days=days)
            scored, made, info = one_date(g, at)
            rows.append(scored.assign(seed=seed, date=k + 1))
            forecasts += [f | {"seed": seed, "date": k + 1} for f in made]
            infos.append(info | {"seed": seed, "date": k + 1, "open": len(scored), "realised": float(scored["won"].mean())})
            print(f"seed {seed}, date {k + 1} ({at:%Y-%m-%d}): {len(scored)} open, realised {scored['won'].mean():.3f}, "
                  f"oppscore mean {scored['oppscore'].mean():.3f}; served {info['served']}; trained in {info['train s']:.1f} s", file=sys.stderr, flush=True)
    every = pd.concat(rows, ignore_index=True)
    y = every["won"].to_numpy()

    print(f"\n{args.n} deals over {args.span_days} days, logging {args.logging}; seeds {', '.join(map(str, args.seeds))}; dates at days {', '.join(map(str, args.days))} after the first deal; "
          f"{len(every)} (deal, date) points, {int(y.sum())} won by the export's end\n")
    print("| method | pooled AUC | pooled log loss | pooled ECE | mean per-date AUC | pooled − per-date AUC |")
    print("|---|---|---|---|---|---|")
    for name in METHODS:
        pooled = _scored(y, every[name].to_numpy())
        per_date = [_scored(part["won"].to_numpy(), part[name].to_numpy())["auc"] for _, part in every.groupby(["seed", "date"])]
        mean_auc = float(np.nanmean(per_date))
        missing = f" ({pooled['missing']} points without a figure)" if pooled["missing"] else ""
        print(f"| {name}{missing} | {pooled['auc']:.3f} | {pooled['log_loss']:.3f} | {pooled['ece']:.3f} | {mean_auc:.3f} | {pooled['auc'] - mean_auc:+.3f} |")

    print("\nPer date (means over seeds): realised win rate of the open deals, each method's mean probability, oppscore's AUC\n")
    print("| date | open | realised | " + " | ".join(METHODS) + " | oppscore AUC |")
    print("|---|---|---|" + "---|" * len(METHODS) + "---|")
    for k, part in every.groupby("date"):
        aucs = [_scored(p["won"].to_numpy(), p["oppscore"].to_numpy())["auc"] for _, p in part.groupby("seed")]
        print(f"| {k} | {len(part) / len(args.seeds):.0f} | {part['won'].mean():.3f} | " + " | ".join(f"{part[m].mean():.3f}" for m in METHODS) + f" | {np.nanmean(aucs):.3f} |")

    f = pd.DataFrame(forecasts)
    f["inside"] = (f["p10"] <= f["actual"]) & (f["actual"] <= f["p90"])
    f["abs error"] = (f["expected"] - f["actual"]).abs()
    print("\nForecast of the amount won in the 30 days after each date (every seed and date)\n")
    print("| method | forecasts | P10–P90 covers the actual | mean absolute error | mean expected / mean actual |")
    print("|---|---|---|---|---|")
    for name, part in f.groupby("method", sort=False):
        print(f"| {name} | {len(part)} | {part['inside'].mean():.2f} | {part['abs error'].mean():,.0f} | {part['expected'].mean() / max(part['actual'].mean(), 1e-9):.2f} |")

    served = pd.DataFrame(infos)
    print(f"\nServed: {', '.join(f'{k} ×{v}' for k, v in served['served'].value_counts().items())}; win label: {served['label'].iloc[-1]}; "
          f"training {statistics.median(served['train s']):.1f} s median per date")


if __name__ == "__main__":
    main()
