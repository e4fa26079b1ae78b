"""Replays of generated worlds (issue 40): does the level of the win probability hold from one
retrain to the next, and how does it rank and forecast, beside the baselines replayed the same way?

    python benchmarks/replay.py [--sizes 300 600 1200] [--seeds 1 2 3] [--others 1200]

Per world (`oppscore generate --logging young-org` at each size and seed, and late-losses and
live at `--others` deals): `training.replay` at every month start from the first by which 10
wins were recorded, each date trained on the export as known then, its open deals judged by
what happened within H (the export's end knows it). Printed per world: the predicted ÷ realised
ratio at each date with 10 wins or more within H, pooled AUC and log loss of the model and of
each baseline on the same resolved deals, the mean of the per-date AUCs, ECE, and the forecast
of the next month against the amount won (P10-P90 coverage, mean forecast ÷ won).
Targets (issue 40): ratio within [0.67, 1.5] at 80 % of those dates; pooled log loss at or below
the stage rate within H; pooled AUC within 0.03 of the mean per-date AUC; P10-P90 holds the
amount won in 2 of 3 months and the mean forecast within 2x of it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def world(n: int, seed: int, logging: str) -> dict:
    from analytics.forecast import actual_won
    from analytics.metrics import metrics
    from analytics.track_record import MIN_WINS, realised_label
    from features.settings import SegmentConfig, Settings
    from features.stages import StageOrder
    from features.synthetic import generate
    from training import replay

    g = generate(n=n, seed=seed, logging=logging)
    stages = StageOrder(g.stages)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp) / "h", segments=SegmentConfig(columns=g.segments))
        when = replay.dates(g.tables, stages, "month")
        runs = [replay.at_date(g.tables, stages, settings, at) for at in when]
    pooled = {"oppscore": ([], []), **{b: ([], []) for b in replay.BASELINES}}
    dates, per_date_auc, forecasts = [], [], []
    for run in runs:
        ids = run.scores["opportunity_id"].to_numpy()
        y = realised_label(g.tables, stages, ids, run.scores["as_of"], np.full(len(ids), run.horizon_days), g.tables.end)
        done = ~np.isnan(y)
        if done.any():
            p = run.scores["win_probability"].to_numpy()[done]
            pooled["oppscore"][0].append(y[done]), pooled["oppscore"][1].append(p)
            for name, frame in run.baselines.items():
                pooled[name][0].append(y[done]), pooled[name][1].append(frame["win_probability"].to_numpy()[done])
            won = int(y[done].sum())
            dates.append({"at": f"{run.at:%Y-%m-%d}", "H": run.horizon_days, "deals": int(done.sum()), "won": won, "predicted": float(p.mean()), "share_won": float(y[done].mean()),
                          "ratio": float(p.mean() / y[done].mean()) if y[done].mean() > 0 else None, "counted": won >= MIN_WINS, "served": run.served["win"]["candidate"]})
            if 0 < won < done.sum():
                per_date_auc.append(metrics(y[done], p)["auc"])
        f = run.forecast
        if f.period[1] <= g.tables.end:
            won_amount = actual_won(g.tables, stages, f.period, f.as_of)
            model = f.methods.set_index("method").loc["model"] if "model" in set(f.methods["method"]) else None
            if model is not None:
                forecasts.append({"at": f"{run.at:%Y-%m-%d}", "expected": float(model["expected"]), "p10": float(model["p10"]), "p90": float(model["p90"]), "won": float(won_amount)})
    figures = {}
    for name, (ys, ps) in pooled.items():
        if ys:
            y, p = np.concatenate(ys), np.concatenate(ps)
            got = metrics(y, p)
            figures[name] = {"auc": got["auc"], "log_loss": got["log_loss"], "ece": got.get("ece")}
    counted = [d for d in dates if d["counted"] and d["ratio"] is not None]
    return {
        "world": f"{logging} n={n} seed={seed}", "dates": dates, "pooled": figures, "mean_per_date_auc": float(np.mean(per_date_auc)) if per_date_auc else None,
        "level_held": f"{sum(0.67 <= d['ratio'] <= 1.5 for d in counted)} of {len(counted)}", "forecasts": forecasts,
        "coverage": f"{sum(f['p10'] <= f['won'] <= f['p90'] for f in forecasts)} of {len(forecasts)}",
        "forecast_over_won": float(np.mean([f["expected"] for f in forecasts]) / max(np.mean([f["won"] for f in forecasts]), 1.0)) if forecasts else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 600, 1200])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--others", type=int, default=1200, help="deals of the late-losses and live worlds (0: none)")
    args = parser.parse_args()
    worlds = [(n, s, "young-org") for n in args.sizes for s in args.seeds] + ([(args.others, 1, "late-losses"), (args.others, 1, "live")] if args.others else [])
    results = []
    for n, seed, logging in worlds:
        started = time.time()
        got = world(n, seed, logging)
        got["seconds"] = round(time.time() - started, 1)
        results.append(got)
        print(json.dumps(got, default=float), flush=True)
    render(results)


def render(results: list[dict]) -> None:
    """The table of RESULTS, and the young-org level figure under it."""
    print("\n| world | dates (10+ wins) | ratio at each such date | level held | AUC pooled / mean per date | log loss: oppscore / stage rate within H / stage weights / configured | ECE: oppscore / stage rate within H | P10-P90 holds | forecast ÷ won |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        ratios = ", ".join(f"{d['ratio']:.2f}" for d in r["dates"] if d["counted"] and d["ratio"] is not None) or "-"
        pooled = r["pooled"]
        ll = " / ".join(f"{pooled[m]['log_loss']:.3f}" if m in pooled else "-" for m in ("oppscore", "stage rate within H", "stage weights", "configured weights"))
        ece = " / ".join(f"{pooled[m]['ece']:.3f}" if m in pooled and pooled[m].get("ece") is not None else "-" for m in ("oppscore", "stage rate within H"))
        auc = f"{pooled['oppscore']['auc']:.3f} / {r['mean_per_date_auc']:.3f}" if "oppscore" in pooled and r["mean_per_date_auc"] is not None else "-"
        fo = f"{r['forecast_over_won']:.2f}" if r["forecast_over_won"] is not None else "-"
        print(f"| {r['world']} | {sum(d['counted'] for d in r['dates'])} | {ratios} | {r['level_held']} | {auc} | {ll} | {ece} | {r['coverage']} | {fo} |")
    counted = [d for r in results if r["world"].startswith("young-org") for d in r["dates"] if d["counted"] and d["ratio"] is not None]
    held = sum(0.67 <= d["ratio"] <= 1.5 for d in counted)
    print(f"\nyoung-org worlds: the level held at {held} of {len(counted)} dates with 10 wins or more within H ({held / max(len(counted), 1):.0%}; target 80 %)")

if __name__ == "__main__":
    pd.set_option("display.width", 200)
    main()
