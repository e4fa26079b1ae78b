"""The track record: how the scores and forecasts that were served did once deals resolved,
what drifted, and whether to retrain.

Every recorded score is judged by the rule of the probability it served: "won within H days
of the date scored" (H recorded with its run). A score is resolved once the deal was won
within H days, or H days passed without a win by the export's end; until then it is pending.
No record of a loss is needed, so losses entered late and in bulk do not bias the figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve

from analytics.forecast import actual_won
from analytics.metrics import below_zero, bootstrap, log_loss_gap, metrics
from features.settings import MonitorConfig
from features.stages import StageOrder
from features.tables import Tables
from scoring.drift import drifted, noise, silent
from scoring.history import plain

SHOWN = ("auc", "log_loss", "brier", "ece")
MIN_SLICE = 30  # resolved scores a slice needs to be shown
BREAKDOWNS = ("month", "model_version", "role", "stage", "team", "owner_id")


def realised_label(tables: Tables, stages: StageOrder, ids: np.ndarray, as_of: pd.Series, horizon_days: np.ndarray, known_at: pd.Timestamp) -> np.ndarray:
    """Per recorded score whose H days have passed by `known_at`: 1 won within them, 0 not; NaN
    pending. A win inside a horizon not yet over waits too: counting early wins while the
    non-wins wait would judge recent scores on their wins alone."""
    hist = tables.stage_history
    wins = hist.loc[(hist["stage"] == stages.config.won) & (hist["entered_at"] <= known_at), ["opportunity_id", "entered_at"]]
    horizon = pd.to_timedelta(np.asarray(horizon_days, dtype=float), unit="D")
    rows = pd.DataFrame({"_row": np.arange(len(ids)), "opportunity_id": np.asarray(ids, dtype=object), "as_of": pd.Series(as_of).reset_index(drop=True), "until": pd.Series(as_of).reset_index(drop=True) + horizon})
    pairs = rows.merge(wins, on="opportunity_id", how="inner")
    hit = (pairs["entered_at"] > pairs["as_of"]) & (pairs["entered_at"] <= pairs["until"])
    won = np.zeros(len(ids), dtype=bool)
    won[pairs.loc[hit, "_row"].to_numpy()] = True
    complete = (rows["until"] <= known_at).to_numpy()
    return np.where(complete, won.astype(float), np.nan)


def figures(y: np.ndarray, p: np.ndarray, deal: np.ndarray, intervals: bool = True) -> dict:
    """AUC, log loss, Brier and ECE of resolved scores, with 90 % intervals over deals."""
    got = metrics(y, p)
    out = {k: got[k] for k in SHOWN} | {"resolved": int(len(y)), "won": int(y.sum()), "mean_predicted": float(p.mean()) if len(p) else float("nan")}
    if intervals:
        out["interval_90"] = bootstrap(y, p, np.ones(len(y)), deal)
    return out


def reliability(y: np.ndarray, p: np.ndarray, bins: int = 10) -> dict:
    """The reliability curve: per bin of equal count, the mean predicted and the share won."""
    if len(y) < bins or len(np.unique(y)) < 2:
        return {"predicted": [], "realised": []}
    realised, predicted = calibration_curve(y, p, n_bins=bins, strategy="quantile")
    return {"predicted": predicted.tolist(), "realised": realised.tolist()}


@dataclass
class TrackRecord:
    """What `oppscore monitor`, `/v1/monitor` and the page show (`to_dict`)."""

    known_at: pd.Timestamp
    scores: pd.DataFrame  # every recorded score with its realised label (NaN: pending)
    runs: pd.DataFrame
    overall: dict  # role → figures of every resolved score
    promised: dict  # version → the backtest's figures
    tables: dict[str, pd.DataFrame]  # breakdown → a row per value
    curves: dict  # role → reliability curve
    drift: pd.DataFrame  # a row per champion run: the largest shift, the score's, what went silent
    forecasts: pd.DataFrame  # a row per recorded forecast method, judged where its period has passed
    forecast_summary: pd.DataFrame
    verdict: dict = field(default_factory=dict)
    replayed: pd.DataFrame = field(default_factory=pd.DataFrame)  # a row per replayed date and method (`replay_table`)

    def to_dict(self) -> dict:
        def rows(frame: pd.DataFrame) -> list[dict]:
            return plain(frame.to_dict(orient="records"))

        return {
            "known_at": str(self.known_at),
            "verdict": self.verdict,
            "scores": {"recorded": int(len(self.scores)), "resolved": int(self.scores["y"].notna().sum()), "pending": int(self.scores["y"].isna().sum()), "runs": int(len(self.runs))},
            "label": "won within the served probability's horizon of the date scored (no loss record needed); pending until the horizon has passed",
            "realised": plain(self.overall),
            "promised": plain(self.promised),
            "by": {name: rows(frame) for name, frame in self.tables.items()},
            "reliability": plain(self.curves),
            "drift": rows(self.drift),
            "forecasts": {"judged": rows(self.forecasts), "by_method": rows(self.forecast_summary)},
            "replayed": {"dates": rows(self.replayed), "level": replay_level(self.replayed)},
        }


def _promised(runs: pd.DataFrame) -> dict:
    out = {}
    for r in runs.itertuples():
        if isinstance(r.promised, dict) and r.promised.get("win") and r.model_version not in out:
            out[str(r.model_version)] = r.promised["win"]
    return out


def _breakdown(scores: pd.DataFrame, by: str, promised: dict) -> pd.DataFrame:
    resolved = scores[scores["y"].notna()]
    rows = []
    for value, group in scores.groupby(by, sort=True, dropna=True):
        done = resolved[resolved[by] == value]
        row = {by: value, "scored": int(len(group)), "resolved": int(len(done)), "pending": int(len(group) - len(done))}
        if len(done) >= MIN_SLICE:
            got = figures(done["y"].to_numpy(), done["p"].to_numpy(), done["opportunity_id"].to_numpy(), intervals=by in ("month", "model_version", "role"))
            row |= {k: got[k] for k in (*SHOWN, "mean_predicted", "won")}
            if "interval_90" in got:
                row["log_loss_90"] = got["interval_90"].get("log_loss")
                row["auc_90"] = got["interval_90"].get("auc")
        if by == "model_version" and str(value) in promised:
            row |= {f"promised_{k}": promised[str(value)].get(k) for k in ("auc", "log_loss")}
        rows.append(row)
    return pd.DataFrame(rows)


def _drift_rows(runs: pd.DataFrame, config: MonitorConfig) -> pd.DataFrame:
    rows = []
    for r in runs.itertuples():
        if r.role != "champion" or not isinstance(r.drift, dict) or not r.drift.get("features"):
            continue
        feats = {c: f for c, f in r.drift["features"].items() if not f.get("from_outcomes")}
        if not feats:
            continue
        top = max(feats, key=lambda c: feats[c]["psi"] or 0.0)
        moved = drifted(r.drift, config.psi_alert)
        score_psi = r.drift.get("score_psi")
        quiet = silent(r.drift, config.silent_share)
        families = sorted({r.drift["features"][c]["family"] for c in quiet})
        size = int(r.drift.get("rows") or 0)
        shifted = score_psi is not None and score_psi >= config.psi_alert + noise(size)
        rows.append({
            "run_id": r.id, "as_of": r.as_of, "rows": size, "noise": noise(size), "model_version": r.model_version, "largest_feature": top, "largest_psi": feats[top]["psi"],
            "score_psi": score_psi, "score_shifted": shifted, "drifted": moved, "silent": quiet, "silent_families": families, "flagged": bool(moved or quiet or shifted),
        })
    return pd.DataFrame(rows, columns=["run_id", "as_of", "rows", "noise", "model_version", "largest_feature", "largest_psi", "score_psi", "score_shifted", "drifted", "silent", "silent_families", "flagged"])


JUDGED_COLUMNS = ["made_at", "as_of", "period_start", "period_end", "method", "model_version", "expected", "p10", "p90", "actual", "inside_p10_p90"]


def judged_forecasts(forecasts: pd.DataFrame, tables: Tables, stages: StageOrder, known_at: pd.Timestamp) -> pd.DataFrame:
    """The recorded forecasts whose period has passed by `known_at`, each beside the amount won in
    it (of the deals open at its as_of) and whether its P10–P90 held that amount."""
    judged = forecasts[forecasts["period_end"] <= known_at].copy() if len(forecasts) else forecasts
    if not len(judged):
        return pd.DataFrame(columns=JUDGED_COLUMNS)
    cache: dict = {}
    actual = []
    for r in judged.itertuples():
        key = (r.as_of, r.period_start, r.period_end)
        if key not in cache:
            cache[key] = actual_won(tables, stages, (r.period_start, r.period_end), r.as_of)
        actual.append(cache[key])
    judged["actual"] = actual
    judged["inside_p10_p90"] = (judged["actual"] >= judged["p10"]) & (judged["actual"] <= judged["p90"])
    return judged[JUDGED_COLUMNS]


def _forecast_rows(forecasts: pd.DataFrame, tables: Tables, stages: StageOrder, known_at: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
    judged = judged_forecasts(forecasts, tables, stages, known_at)
    if len(judged):
        error = judged["expected"] - judged["actual"]
        summary = judged.assign(error=error).groupby("method").agg(judged=("actual", "size"), coverage_p10_p90=("inside_p10_p90", "mean"), mean_abs_error=("error", lambda e: e.abs().mean()),
                                                                   mean_expected=("expected", "mean"), mean_actual=("actual", "mean")).reset_index()
    else:
        summary = pd.DataFrame(columns=["method", "judged", "coverage_p10_p90", "mean_abs_error", "mean_expected", "mean_actual"])
    summary["pending"] = [int(((forecasts["method"] == m) & (forecasts["period_end"] > known_at)).sum()) for m in summary["method"]] if len(forecasts) else []
    return judged, summary


REPLAYED_ROLES = ("replay", "baseline")
LEVEL_BAND = (2 / 3, 1.5)  # predicted ÷ realised share won: a level that holds
MIN_WINS = 10  # resolved wins within H a replayed date needs before its level counts


def replay_table(scores: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per replayed date and method (the replayed model, each baseline): the deals scored, how
    many resolved, the mean win probability given them, the share won within H, their ratio,
    and AUC and log loss where enough resolved. The level a manager can check from day one."""
    replayed = runs[(runs["source"] == "replay")] if len(runs) else runs
    columns = ["as_of", "method", "role", "horizon_days", "scored", "resolved", "won", "mean_predicted", "share_won", "ratio", "auc", "log_loss"]
    if replayed.empty:
        return pd.DataFrame(columns=columns)
    out = []
    for run in replayed.itertuples():
        mine = scores[scores["run_id"] == run.id]
        done = mine[mine["y"].notna()]
        row = {"as_of": run.as_of, "method": "oppscore" if run.role == "replay" else str(run.model_version), "role": run.role, "horizon_days": run.horizon_days,
               "scored": int(len(mine)), "resolved": int(len(done)), "won": int(done["y"].sum()) if len(done) else 0}
        if len(done):
            row["mean_predicted"], row["share_won"] = float(done["p"].mean()), float(done["y"].mean())
            row["ratio"] = row["mean_predicted"] / row["share_won"] if row["share_won"] > 0 else float("nan")
            if len(done) >= MIN_SLICE and 0 < row["won"] < len(done):
                got = metrics(done["y"].to_numpy(), done["p"].to_numpy())
                row["auc"], row["log_loss"] = got["auc"], got["log_loss"]
        out.append(row)
    return pd.DataFrame(out, columns=columns).sort_values(["as_of", "role", "method"], ascending=[True, False, True], kind="stable").reset_index(drop=True)


def replay_level(table: pd.DataFrame) -> dict:
    """Per method, the replayed dates with MIN_WINS wins within H at least, and how many of them
    had the mean predicted within LEVEL_BAND of the share won."""
    out = {}
    counted = table[table["won"] >= MIN_WINS] if len(table) else table
    for method, group in counted.groupby("method", sort=False):
        inside = group["ratio"].between(*LEVEL_BAND)
        out[str(method)] = {"dates": int(len(group)), "inside": int(inside.sum()), "ratios": [round(float(r), 3) for r in group["ratio"]]}
    return out


def verdict(scores: pd.DataFrame, runs: pd.DataFrame, drift: pd.DataFrame, promised: dict, config: MonitorConfig) -> dict:
    """Retrain, look at the data, or nothing to do, with the figures that say why."""
    reasons, status = [], "no reason to retrain"
    champion = scores[(scores["role"] == "champion") & scores["y"].notna()]
    realised = None
    if len(champion):
        last = champion["as_of"].max()
        recent = champion[champion["as_of"] >= last - pd.Timedelta(days=config.window_days)]
        version = str(runs.loc[runs["role"] == "champion", "model_version"].iloc[-1]) if (runs["role"] == "champion").any() else None
        promise = promised.get(version) if version is not None else None
        recent = recent[recent["model_version"] == version] if version is not None else recent
        if len(recent) >= config.min_resolved and promise and promise.get("log_loss") is not None:
            got = figures(recent["y"].to_numpy(), recent["p"].to_numpy(), recent["opportunity_id"].to_numpy())
            low = (got["interval_90"].get("log_loss") or [got["log_loss"]])[0]
            realised = {"version": version, "from": str(recent["as_of"].min()), "to": str(last), "resolved": got["resolved"], "log_loss": got["log_loss"],
                        "log_loss_90": got["interval_90"].get("log_loss"), "auc": got["auc"], "promised_log_loss": promise["log_loss"], "promised_auc": promise.get("auc")}
            if got["log_loss"] > promise["log_loss"] + config.log_loss_tolerance and low > promise["log_loss"]:
                status = "retrain recommended"
                interval = got["interval_90"].get("log_loss")
                shown = f" (90 % interval {interval[0]:.3f}–{interval[1]:.3f})" if interval else ""
                reasons.append(f"realised log loss {got['log_loss']:.3f} over {got['resolved']:,} resolved scores of v{version} made in the {config.window_days} days to {last:%Y-%m-%d}{shown} against {promise['log_loss']:.3f} promised by its backtest")
        elif len(recent) < config.min_resolved:
            reasons.append(f"{len(recent):,} resolved scores of the champion in the last {config.window_days} days; {config.min_resolved} needed to judge its realised figures")
    elif len(served := scores[scores["role"].isin(["champion", "shadow"])]):
        reasons.append(f"none of the {len(served):,} recorded scores has resolved yet (each waits for its label's horizon)")
    latest = drift.iloc[-1] if len(drift) else None
    if latest is not None:
        if latest["silent_families"]:
            if status == "no reason to retrain":
                status = "check the data"
            reasons.append(f"{', '.join(latest['silent_families'])} features went silent at the run of {latest['as_of']:%Y-%m-%d} ({', '.join(latest['silent'][:4])}: no values where training saw them): is the feed still arriving?")
        if latest["drifted"]:
            shown = ", ".join(latest["drifted"][:3])
            reasons.append(f"features drifted at the latest run: {shown} (largest PSI {latest['largest_psi']:.2f} on {latest['largest_feature']}; {config.psi_alert:.2f} counts as drifted)")
        if latest["score_shifted"]:
            if status == "no reason to retrain":
                status = "retrain recommended"
            reasons.append(f"the win probabilities served have shifted from the training reference (PSI {latest['score_psi']:.2f})")
    if not reasons and status == "no reason to retrain":
        reasons.append("realised figures are within the backtest's promise and nothing drifted" if realised is not None else "no served score has resolved yet")
    if not len(scores):
        status, reasons = "nothing recorded yet", ["no scoring run is recorded: `oppscore score` records each run in the score history"]
    elif realised is None and status == "no reason to retrain":
        status = "too early to tell"
    return {"status": status, "says": f"{status}: " + "; ".join(reasons), "reasons": reasons, "realised": realised}


def track_record(runs: pd.DataFrame, scores: pd.DataFrame, forecasts: pd.DataFrame, tables: Tables, stages: StageOrder, config: MonitorConfig) -> TrackRecord:
    """The track record of a score history (`scoring.history.ScoreHistory.runs/scores/forecasts`)
    judged against an export (its end is the time outcomes are known at)."""
    known_at = tables.end
    horizon = scores["run_id"].map(runs.set_index("id")["horizon_days"]).astype(float) if len(scores) else pd.Series(dtype=float)
    scores = scores.assign(horizon_days=horizon.to_numpy())
    scores = scores[scores["horizon_days"].notna()].reset_index(drop=True)  # runs recorded before horizons were: no rule to judge them by
    scores["y"] = realised_label(tables, stages, scores["opportunity_id"].to_numpy(), scores["as_of"], scores["horizon_days"].to_numpy(), known_at)
    scores["p"] = scores["win_probability"].astype(float)
    scores["month"] = scores["as_of"].dt.strftime("%Y-%m")
    opps = tables.opportunities.set_index("opportunity_id")
    for col in ("team", "owner_id"):
        if col in opps.columns:
            scores[col] = scores["opportunity_id"].map(opps[col])
    promised = _promised(runs)
    resolved = scores[scores["y"].notna()]
    overall, curves = {}, {}
    for role, group in resolved.groupby("role"):
        if role == "baseline":  # several methods: each is shown per date (`replay_table`), not pooled
            continue
        overall[role] = figures(group["y"].to_numpy(), group["p"].to_numpy(), group["opportunity_id"].to_numpy())
        curves[role] = reliability(group["y"].to_numpy(), group["p"].to_numpy())
    served = scores[scores["role"] != "baseline"]
    breakdowns = {by: _breakdown(served, by, promised) for by in BREAKDOWNS if by in served.columns and served[by].notna().any()}
    drift = _drift_rows(runs, config)
    judged, summary = _forecast_rows(forecasts, tables, stages, known_at)
    said = verdict(scores, runs, drift, promised, config)
    replayed = replay_table(scores, runs)
    if len(replayed):
        said = _with_replay(said, replayed)
    return TrackRecord(known_at, scores, runs, overall, promised, breakdowns, curves, drift, judged, summary, said, replayed)


def _with_replay(said: dict, replayed: pd.DataFrame) -> dict:
    """The verdict says what the replay showed, in one line."""
    level = replay_level(replayed).get("oppscore")
    dates = replayed.loc[replayed["role"] == "replay", "as_of"]
    line = f"replayed at {len(dates)} past dates ({dates.min():%Y-%m-%d} to {dates.max():%Y-%m-%d})"
    if level and level["dates"]:
        line += f": the level held (mean win probability within {LEVEL_BAND[0]:.2f}-{LEVEL_BAND[1]:.1f}x the share won within H) at {level['inside']} of {level['dates']} dates with {MIN_WINS} wins or more"
    else:
        line += f": no date with {MIN_WINS} resolved wins yet to judge the level by"
    return {**said, "reasons": [*said["reasons"], line], "says": f"{said['says']}; {line}"}


def compare(scores: pd.DataFrame, version: str, champion: str) -> dict:
    """A version against the champion on the scores both made of the same deals at the same
    dates, resolved: each one's realised figures and the gap in log loss with its 90 % interval
    over deals. `scores`: `TrackRecord.scores`."""
    done = scores[scores["y"].notna()]
    mine = done[done["model_version"] == str(version)].drop_duplicates(["opportunity_id", "as_of"], keep="last")
    theirs = done[(done["model_version"] == str(champion)) & (done["role"] == "champion")].drop_duplicates(["opportunity_id", "as_of"], keep="last")
    both = mine.merge(theirs, on=["opportunity_id", "as_of"], suffixes=("", "_champion"))
    if both.empty:
        return {"pairs": 0}
    y, deal = both["y"].to_numpy(), both["opportunity_id"].to_numpy()
    gap = log_loss_gap(y, both["p"].to_numpy(), both["p_champion"].to_numpy(), np.ones(len(y)), deal)
    draws = gap["draws"] if gap is not None else np.zeros(0)
    return {
        "pairs": int(len(both)), "deals": int(len(np.unique(deal))),
        "version": figures(y, both["p"].to_numpy(), deal, intervals=False), "champion": figures(y, both["p_champion"].to_numpy(), deal, intervals=False),
        "log_loss_gap": gap["gap"] if gap is not None else None,
        "gap_90": [float(np.quantile(draws, 0.05)), float(np.quantile(draws, 0.95))] if len(draws) else None,
        "better_beyond_doubt": below_zero(draws),
    }


def of_history(history, tables: Tables, stages: StageOrder, config: MonitorConfig) -> TrackRecord:
    """The track record of everything a score history holds (`scoring.history.ScoreHistory`),
    judged against an export: what `monitor`, `promote --realised` and the page read. A history
    that cannot be read is said as such (NotEnoughData), not taken for an empty one."""
    from features.errors import NotEnoughData
    from scoring.database import DatabaseUnavailable

    try:
        runs, scores, forecasts = history.runs(), history.scores(), history.forecasts()
    except DatabaseUnavailable as exc:
        raise NotEnoughData(f"the track record needs the score history: {exc}") from None
    return track_record(runs, scores, forecasts, tables, stages, config)
