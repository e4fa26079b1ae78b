"""`oppscore monitor`'s work on a score history of 26 weekly runs of about 3,000 open deals each:
reading the history and computing the track record (realised figures with their intervals and
breakdowns, drift, forecasts, verdict) against the export.

    python benchmarks/monitor.py [--n 30000] [--runs 26] [--repeat 3]

The export is generated and trained on first (not timed); each run is scored as of its week and
recorded with its drift (timed apart: that is `oppscore score`'s cost). Printed: the open deals
per run, the recording time per run, and each monitor repeat with their median.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30_000)
    parser.add_argument("--runs", type=int, default=26)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import pandas as pd

    from analytics.track_record import track_record
    from features.settings import MonitorConfig, SegmentConfig, Settings
    from features.stages import StageOrder
    from features.synthetic import generate
    from scoring.drift import of_run
    from scoring.history import RunFacts, ScoreHistory
    from scoring.score import score_open
    from training.pipeline import train

    g = generate(n=args.n, seed=3)
    stages = StageOrder(g.stages)
    bundle = train(g.tables, stages, Settings(segments=SegmentConfig(columns=g.segments))).bundle
    bundle.metadata["version"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        history = ScoreHistory(f"sqlite:///{Path(tmp) / 'history.db'}", "bench")
        first = g.tables.end - pd.Timedelta(weeks=args.runs + 20)
        sizes, recording = [], []
        for k in range(args.runs):
            at = first + pd.Timedelta(weeks=k)
            t = time.perf_counter()
            tally: dict = {}
            scored = score_open(bundle, g.tables, at, previous=history.previous(g.tables.opportunities["opportunity_id"].to_numpy(), at), drift_into=tally)
            history.record(scored, at, "1", "batch", RunFacts.of(bundle, drift=of_run(bundle, [tally])))
            recording.append(time.perf_counter() - t)
            sizes.append(len(scored))
        print(f"{args.runs} runs recorded: median {statistics.median(sizes):,.0f} open deals per run ({sum(sizes):,} scores); scoring and recording a run: median {statistics.median(recording):.2f} s", flush=True)
        seconds = []
        for k in range(args.repeat):
            t = time.perf_counter()
            record = track_record(history.runs(), history.scores(), history.forecasts(), g.tables, stages, MonitorConfig())
            seconds.append(time.perf_counter() - t)
            print(f"monitor {k + 1}: {seconds[-1]:.2f} s ({record.verdict['status']}; {int(record.scores['y'].notna().sum()):,} resolved)", flush=True)
        print(f"monitor over {args.runs} runs of {statistics.median(sizes):,.0f} open deals ({args.n:,}-deal export): median {statistics.median(seconds):.2f} s over {args.repeat} repeats (target ≤ 10 s)")


if __name__ == "__main__":
    main()
