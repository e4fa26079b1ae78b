"""One self-contained HTML page for managers: tables and plots (images embedded), no server."""

from __future__ import annotations

import base64
import html
import io

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#1d2430}
table{border-collapse:collapse;margin:8px 0 20px}td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:right}
th{color:#556}td:first-child,th:first-child{text-align:left}h2{margin-top:32px}img{max-width:100%}"""


def _money(value: float, _pos=None) -> str:
    """An axis tick of money as a manager reads it: 850k, 1.2M (not 1e6)."""
    size = abs(value)
    if size >= 1e9:
        return f"{value / 1e9:,.1f}B".replace(".0B", "B")
    if size >= 1e6:
        return f"{value / 1e6:,.1f}M".replace(".0M", "M")
    if size >= 1e3:
        return f"{value / 1e3:,.0f}k"
    return f"{value:,.0f}"


MONEY = FuncFormatter(_money)


def figure_uri(fig) -> str:
    """The figure as a data: URI (the managers' page sets it as an image's source)."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    return f"data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"


def _png(fig) -> str:
    return f'<img src="{figure_uri(fig)}">'


def _table(frame: pd.DataFrame, limit: int = 40) -> str:
    return frame.head(limit).to_html(index=False, float_format=lambda v: f"{v:,.3f}" if abs(v) < 10 else f"{v:,.0f}", na_rep="", border=0)


def stage_weights_plot(weights: pd.DataFrame, uri: bool = False) -> str:
    fig = Figure(figsize=(7, 3.2))
    ax = fig.subplots()
    y = np.arange(len(weights))
    ax.errorbar(weights["weight"], y, xerr=[weights["weight"] - weights["low"], weights["high"] - weights["weight"]], fmt="o", label="measured (interval)")
    if weights["configured"].notna().any():
        ax.plot(weights["configured"], y, "s", color="grey", label="configured")
    ax.set_yticks(y, weights["stage"])
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="share of deals that reached the stage and were won", title="stage weights")
    ax.legend(fontsize=8)
    return figure_uri(fig) if uri else _png(fig)


def dwell_plot(by_dwell: pd.DataFrame, uri: bool = False) -> str:
    fig = Figure(figsize=(7, 3.2))
    ax = fig.subplots()
    for stage, part in by_dwell.groupby("stage", sort=False):
        ax.plot(part["min_days"], part["weight"], marker="o", label=stage)
    ax.set(xlabel="days already spent in the stage (at least)", ylabel="win rate", title="how a stage's weight falls with dwell")
    ax.legend(fontsize=7)
    return figure_uri(fig) if uri else _png(fig)


def funnel_plot(conversion: pd.DataFrame, uri: bool = False) -> str:
    fig = Figure(figsize=(7, 3.2))
    ax = fig.subplots()
    ax.barh(conversion["stage"], conversion["reached"], color="#9bb6e4", label="reached")
    ax.barh(conversion["stage"], conversion["won_after"], color="#2f6bd0", label="won after")
    ax.invert_yaxis()
    ax.set(xlabel="opportunities", title="funnel")
    ax.legend(fontsize=8)
    return figure_uri(fig) if uri else _png(fig)


def dwell_quantiles_plot(dwell: pd.DataFrame, uri: bool = False) -> str:
    fig = Figure(figsize=(7, 3.2))
    ax = fig.subplots()
    y = np.arange(len(dwell))
    ax.hlines(y, dwell["median_days"], dwell["p90_days"], color="#9bb6e4", linewidth=6, label="median to P90")
    ax.plot(dwell["p75_days"], y, "|", color="#1d2430", markersize=14, label="P75")
    ax.set_yticks(y, dwell["stage"])
    ax.invert_yaxis()
    ax.set(xlabel="days in stage (completed stays)", title="dwell per stage")
    ax.legend(fontsize=8)
    return figure_uri(fig) if uri else _png(fig)


def forecast_plot(methods: pd.DataFrame, title: str, uri: bool = False) -> str:
    fig = Figure(figsize=(7, 3))
    ax = fig.subplots()
    y = np.arange(len(methods))
    ax.hlines(y, methods["p10"], methods["p90"], color="#9bb6e4", linewidth=10, label="P10 to P90")
    ax.plot(methods["expected"], y, "o", color="#2f6bd0", label="expected")
    ax.set_yticks(y, methods["method"])
    ax.set(xlabel="won amount", title=title)
    ax.xaxis.set_major_formatter(MONEY)
    ax.legend(fontsize=8)
    return figure_uri(fig) if uri else _png(fig)


def backtest_plot(bt: pd.DataFrame, uri: bool = False) -> str:
    fig = Figure(figsize=(8, 3.4))
    ax = fig.subplots()
    periods = list(dict.fromkeys(bt["period"]))
    x = np.arange(len(periods))
    methods = list(dict.fromkeys(bt["method"]))
    for i, m in enumerate(methods):
        part = bt[bt["method"] == m].set_index("period").reindex(periods)
        off = (i - (len(methods) - 1) / 2) * 0.2
        ax.errorbar(x + off, part["expected"], yerr=[part["expected"] - part["p10"], part["p90"] - part["expected"]], fmt="o", capsize=3, label=m)
    actual = bt.drop_duplicates("period").set_index("period").reindex(periods)["actual"]
    ax.plot(x, actual, "k_", markersize=20, markeredgewidth=2, label="actual")
    ax.set_xticks(x, periods, rotation=30)
    ax.set(ylabel="won amount", title="backtest: each period forecast as of its start")
    ax.yaxis.set_major_formatter(MONEY)
    ax.legend(fontsize=7)
    return figure_uri(fig) if uri else _png(fig)


def page(title: str, sections: list[tuple[str, str]]) -> str:
    body = "".join(f"<h2>{html.escape(h)}</h2>{content}" for h, content in sections)
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"


def reliability_plot(curves: dict, uri: bool = False) -> str:
    """Realised share won against the probability served, per role (champion, shadow)."""
    fig = Figure(figsize=(4.2, 4))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linewidth=1, label="perfectly calibrated")
    for role, curve in curves.items():
        if curve["predicted"]:
            ax.plot(curve["predicted"], curve["realised"], "o-", label=role)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="win probability served", ylabel="share won within its horizon", title="how the scores did")
    ax.legend(fontsize=8)
    return figure_uri(fig) if uri else _png(fig)


def realised_plot(by_month: pd.DataFrame, promised: dict, uri: bool = False) -> str:
    """Realised log loss by month of scoring (with its interval) against what the backtests promised."""
    fig = Figure(figsize=(7, 3.2))
    ax = fig.subplots()
    shown = by_month[by_month["log_loss"].notna()] if "log_loss" in by_month else by_month.iloc[:0]
    x = np.arange(len(shown))
    if len(shown):
        low = [i[0] if isinstance(i, list) else v for i, v in zip(shown.get("log_loss_90", shown["log_loss"]), shown["log_loss"], strict=True)]
        high = [i[1] if isinstance(i, list) else v for i, v in zip(shown.get("log_loss_90", shown["log_loss"]), shown["log_loss"], strict=True)]
        ax.errorbar(x, shown["log_loss"], yerr=[shown["log_loss"] - low, np.asarray(high) - shown["log_loss"]], fmt="o", capsize=3, label="realised (90 % interval)")
        ax.set_xticks(x, shown["month"], rotation=30)
    for version, figures in promised.items():
        if figures.get("log_loss") is not None:
            ax.axhline(figures["log_loss"], linestyle="--", linewidth=1, label=f"promised by v{version}")
    ax.set(ylabel="log loss (lower is better)", title="realised against promised, by month scored")
    ax.legend(fontsize=7)
    return figure_uri(fig) if uri else _png(fig)


def replay_plot(replayed: pd.DataFrame, uri: bool = False) -> str:
    """At each replayed date, the mean win probability each method gave the deals open then
    against the share of them won within H (the black line): a level that holds sits on it."""
    fig = Figure(figsize=(7, 3.4))
    ax = fig.subplots()
    done = replayed[replayed["resolved"] > 0] if len(replayed) else replayed
    if len(done):
        truth = done[done["role"] == "replay"].drop_duplicates("as_of")
        ax.plot(truth["as_of"], truth["share_won"], "k-o", linewidth=2, label="share won within H")
        for method, group in done.groupby("method", sort=False):
            ax.plot(group["as_of"], group["mean_predicted"], "o--" if method != "oppscore" else "s-", label=str(method))
        ax.tick_params(axis="x", labelrotation=30)
    ax.set(ylabel="win probability", title="replayed: predicted level against what happened")
    ax.legend(fontsize=7)
    return figure_uri(fig) if uri else _png(fig)


def drift_plot(drift: pd.DataFrame, alert: float, uri: bool = False) -> str:
    """The largest feature PSI and the score's PSI at each run, against the alert line."""
    fig = Figure(figsize=(7, 3))
    ax = fig.subplots()
    if len(drift):
        ax.plot(drift["as_of"], drift["largest_psi"], "o-", label="largest feature PSI")
        ax.plot(drift["as_of"], drift["score_psi"], "s-", label="win probability PSI")
    ax.axhline(alert, color="#c0392b", linestyle="--", linewidth=1, label=f"drifted ({alert:.2f})")
    ax.set(ylabel="PSI", title="drift from the training reference, per scoring run")
    ax.legend(fontsize=7)
    fig.autofmt_xdate()
    return figure_uri(fig) if uri else _png(fig)
