"""A synthetic CRM export with known signal, for the demo, the tests and the benchmarks.

Outcomes depend on all three feature families, so a model that learns them has something to
find and a test can tell whether it did:
- segment: industry, source, size, team, owner skill and account history move a hidden deal
  quality that drives every stage decision;
- stage dwell: deals heading for a loss linger in their stage (about twice as long), while
  large and enterprise deals are slow whatever their outcome (an interaction a linear model
  cannot read);
- activity: good deals get more activities, more inbound ones and more contacts, and deals
  heading for a loss go quiet weeks before they are marked lost.
It also has the quirks real pipelines have: moves back to an earlier stage, lost deals that
re-open (some are won back), and deals still open when the export is taken.
Vectorised over opportunities; the only loop is over pipeline steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.errors import InputInvalid
from features.settings import StageConfig
from features.tables import TS_DTYPE, Tables

STAGE_SETS = {
    "en": StageConfig(
        open=["Prospecting", "Qualification", "Needs Analysis", "Proposal", "Negotiation"],
        won="Closed Won",
        lost="Closed Lost",
        configured_weights=[0.1, 0.2, 0.4, 0.6, 0.8],
    ),
    "zh": StageConfig(
        open=["初步接触", "意向确认", "方案设计", "预算评估", "商务谈判", "合同签订"],
        won="赢单",
        lost="输单",
        configured_weights=[0.1, 0.2, 0.3, 0.5, 0.7, 0.9],
    ),
}
SEGMENTS = ["industry", "region", "source", "company_size", "team"]
DEFAULT_END = pd.Timestamp("2026-09-30T18:00:00Z")
SPAN_DAYS = 730

_INDUSTRY = {"software": 0.35, "finance": 0.1, "retail": -0.2, "manufacturing": 0.0, "healthcare": 0.15, "education": -0.35}
_REGION = {"north": 0.1, "south": -0.1, "east": 0.0, "west": 0.05}
_SOURCE = {"inbound": 0.5, "referral": 0.7, "partner": 0.2, "outbound": -0.45, "event": -0.1}
_SIZE = {"small": 0.2, "medium": 0.05, "large": -0.1, "enterprise": -0.3}
_SIZE_AMOUNT = {"small": 8.5, "medium": 9.6, "large": 10.6, "enterprise": 11.6}
_TEAM = {"Alpha": 0.25, "Bravo": 0.0, "Charlie": -0.1, "Delta": -0.25}
_ACTIVITY_TYPES = np.array(["email", "call", "meeting", "demo", "proposal_sent"])
_LOSS_REASONS = np.array(["no budget", "lost to competitor", "no decision", "price", "timing"])


@dataclass(frozen=True)
class Generated:
    tables: Tables
    stages: StageConfig
    segments: list[str]


def _pick(rng: np.random.Generator, effects: dict[str, float], n: int) -> tuple[np.ndarray, np.ndarray]:
    names = np.array(list(effects))
    chosen = rng.integers(0, len(names), n)
    return names[chosen], np.array(list(effects.values()))[chosen]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


LOGGING = ("live", "after-the-fact", "late-losses", "young-org")
YOUNG_ORG_DAYS = 270  # a young org's export: its first nine months


def generate(n: int = 2000, seed: int = 0, stages: str = "en", end: pd.Timestamp = DEFAULT_END, logging: str = "live", span_days: int = SPAN_DAYS) -> Generated:
    """A pipeline of n deals created over `span_days` before `end`; `logging` "live" records it
    as it happened, "after-the-fact" as real teams often do (`_after_the_fact`: wins entered at
    their last stage days before), "late-losses" that and losses recorded weeks to months late,
    many in bulk clean-ups (`_late_losses`): the deals open at any date are then mostly dead.
    "young-org" is a young org's export (`_young_org`): its first months (`span_days` at most
    YOUNG_ORG_DAYS), volume growing, a base rate that moves by up to 2x from one month to the
    next, deals entered past the first stage and won within days, and stale deals never closed.
    The steps draw from one random generator in a fixed order: a seed gives the same export."""
    _check(n, stages, logging, span_days)
    config = STAGE_SETS[stages]
    rng = np.random.default_rng(seed)
    end_s = int(end.value // 1_000_000_000)
    young = logging == "young-org"
    deals = _deals(rng, n, min(span_days, YOUNG_ORG_DAYS) if young else span_days, end_s, growing=young)
    if young:
        deals.quality = deals.quality + _monthly_mood(deals.created, np.random.default_rng(seed + 4))
    paths = _paths(rng, deals, len(config.open))
    acts = _activities(rng, deals, paths)
    if logging == "late-losses":
        paths.entered = _late_losses(paths.opp_of, paths.stage_idx, paths.entered, deals.created.min(), end_s, np.random.default_rng(seed + 3))
    if young:
        paths = _never_closed(paths, np.random.default_rng(seed + 5))
    opportunities, history, activities, fields = _tables(rng, deals, paths, acts, config, end_s, seed)
    if logging in ("after-the-fact", "late-losses", "young-org"):
        quick = 0.5 if logging == "late-losses" else 0.8  # where losses wait, so do some wins
        opportunities, history, activities, fields = _after_the_fact(opportunities, history, activities, fields, config, np.random.default_rng(seed + 1), quick)
    return Generated(Tables(opportunities, history, activities, fields), config, list(SEGMENTS))


DAY = np.timedelta64(1, "D").astype("timedelta64[s]").astype(np.int64)


def _check(n: int, stages: str, logging: str, span_days: int) -> None:
    if span_days < 1:
        raise InputInvalid(f"span_days must be at least 1, got {span_days}")
    if logging not in LOGGING:
        raise InputInvalid(f"unknown logging {logging!r}, expected one of {', '.join(LOGGING)}")
    if stages not in STAGE_SETS:
        raise InputInvalid(f"unknown stage set {stages!r}, expected one of {sorted(STAGE_SETS)}")
    if n < 1:
        raise InputInvalid(f"n must be at least 1, got {n}")


@dataclass
class _Deals:
    """Each deal's creation, segments, owner, account, amount, and its hidden quality (what
    makes it win: the known signal the models are tested against)."""

    created: np.ndarray  # seconds
    industry: np.ndarray
    region: np.ndarray
    source: np.ndarray
    size: np.ndarray
    team: np.ndarray
    owner: np.ndarray
    account: np.ndarray
    amount: np.ndarray
    quality: np.ndarray
    size_pace: np.ndarray

    def __len__(self) -> int:
        return len(self.created)


def _deals(rng: np.random.Generator, n: int, span_days: int, end_s: int, growing: bool = False) -> _Deals:
    u = rng.random(n)
    # growing: deals a month rise with the org's age (density rising linearly to the end)
    created = end_s - ((1 - np.sqrt(u)) * span_days * DAY).astype(np.int64) if growing else end_s - (u ** 0.8 * span_days * DAY).astype(np.int64)
    industry, e_ind = _pick(rng, _INDUSTRY, n)
    region, e_reg = _pick(rng, _REGION, n)
    source, e_src = _pick(rng, _SOURCE, n)
    size, e_size = _pick(rng, _SIZE, n)
    team, e_team = _pick(rng, _TEAM, n)
    n_owners = max(8, n // 150)
    owner_skill = rng.normal(0, 0.45, n_owners)
    owner = rng.integers(0, n_owners, n)
    n_accounts = max(10, n // 4)
    account_quality = rng.normal(0, 0.35, n_accounts)
    account = rng.integers(0, n_accounts, n)
    amount = np.round(np.exp(rng.normal(np.vectorize(_SIZE_AMOUNT.get)(size), 0.6)), -1)
    quality = (
        e_ind + e_reg + e_src + e_size + e_team + owner_skill[owner] + account_quality[account]
        - 0.08 * (np.log(amount) - 10) + rng.normal(0, 0.5, n)
    )
    size_pace = np.vectorize({"small": 0.7, "medium": 1.0, "large": 1.5, "enterprise": 2.3}.get)(size)
    return _Deals(created, industry, region, source, size, team, owner, account, amount, quality, size_pace)


@dataclass
class _Paths:
    """Every stage entry of every deal (deal, stage index: k won, -1 lost; time), and when each
    deal was won, lost, and from which stage."""

    opp_of: np.ndarray
    stage_idx: np.ndarray
    entered: np.ndarray
    won_at: np.ndarray
    lost_at: np.ndarray
    lost_from: np.ndarray
    base_dwell: np.ndarray


def _paths(rng: np.random.Generator, deals: _Deals, k: int) -> _Paths:
    """Stage paths, one step per loop turn for all deals at once; then re-opened losses."""
    n, created, quality, day = len(deals), deals.created, deals.quality, DAY
    base_dwell = np.linspace(9, 20, k)  # days; later stages take longer
    rows_opp, rows_idx, rows_t = [np.arange(n)], [np.zeros(n, dtype=np.int64)], [created.copy()]
    idx = np.zeros(n, dtype=np.int64)
    t = created.copy()
    alive = np.ones(n, dtype=bool)
    lost_at = np.full(n, -1, dtype=np.int64)
    lost_from = np.full(n, -1, dtype=np.int64)
    won_at = np.full(n, -1, dtype=np.int64)
    for _ in range(4 * k):
        a = np.flatnonzero(alive)
        if a.size == 0:
            break
        s, q = idx[a], quality[a]
        p_adv = _sigmoid(1.3 + 1.1 * q - 0.12 * s)
        u = rng.random(a.size)
        back = (u < 0.05) & (s > 0)
        advance = ~back & (rng.random(a.size) < p_adv)
        lose = ~back & ~advance
        # big deals move slowly without being worse, so dwell means something only beside size
        slow = np.where(lose, 2.2, 1.0) * np.exp(-0.25 * q) * deals.size_pace[a]
        dwell = rng.gamma(2.0, base_dwell[s] * slow / 2.0) * day
        t_next = t[a] + dwell.astype(np.int64) + 3600
        new_idx = np.where(back, s - 1, np.where(advance, s + 1, -1))
        win = advance & (s == k - 1)
        new_idx = np.where(win, k, new_idx)
        rows_opp.append(a)
        rows_idx.append(new_idx)
        rows_t.append(t_next)
        t[a] = t_next
        idx[a] = new_idx
        won_at[a[win]] = t_next[win]
        lost_at[a[lose]] = t_next[lose]
        lost_from[a[lose]] = s[lose]
        alive[a[win | lose]] = False
    still = np.flatnonzero(alive)  # bounded loop: whatever is left is lost at its next step
    t_last = t[still] + (30 * day)
    rows_opp.append(still), rows_idx.append(np.full(still.size, -1)), rows_t.append(t_last)
    lost_at[still], lost_from[still] = t_last, idx[still]

    # re-opened losses: some lost deals come back weeks later, and some of those are won
    lost = np.flatnonzero(lost_at >= 0)
    reopen = lost[rng.random(lost.size) < 0.07]
    t_re = lost_at[reopen] + (rng.uniform(15, 60, reopen.size) * day).astype(np.int64)
    re_stage = np.maximum(lost_from[reopen] - 1, 0)
    rewon = rng.random(reopen.size) < _sigmoid(-0.3 + quality[reopen])
    t_close2 = t_re + (rng.gamma(2.0, 12.0, reopen.size) * day).astype(np.int64)
    rows_opp += [reopen, reopen]
    rows_idx += [re_stage, np.where(rewon, k, -1)]
    rows_t += [t_re, t_close2]
    won_at[reopen[rewon]] = t_close2[rewon]
    return _Paths(np.concatenate(rows_opp), np.concatenate(rows_idx), np.concatenate(rows_t), won_at, lost_at, lost_from, base_dwell)


def _monthly_mood(created: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A shift of every deal's quality by the month it was created in: a market that moves, so
    the share of a month's deals that are won moves by up to about 2x from one month to the
    next (a random walk, drawn back toward the middle)."""
    month = ((created - created.min()) // (30 * DAY)).astype(np.int64)
    steps = rng.uniform(-0.45, 0.45, month.max() + 1)
    walk = np.zeros(month.max() + 1)
    for k in range(1, len(walk)):
        walk[k] = 0.6 * walk[k - 1] + steps[k]
    return walk[month]


def _never_closed(paths: _Paths, rng: np.random.Generator) -> _Paths:
    """A third of the deals that end lost are never closed in the CRM: their loss is not
    recorded, they stay open at their last stage for good (what a young org's pipeline holds)."""
    last = np.full(paths.opp_of.max() + 1, -1, dtype=np.int64)
    np.maximum.at(last, paths.opp_of, paths.entered)
    final_loss = (paths.stage_idx == -1) & (paths.entered == last[paths.opp_of])
    stale = np.zeros(len(last), dtype=bool)
    stale[np.unique(paths.opp_of[final_loss])] = rng.random(len(np.unique(paths.opp_of[final_loss]))) < 1 / 3
    drop = final_loss & stale[paths.opp_of]
    keep = ~drop
    lost_at = np.where(stale, -1, paths.lost_at)
    return _Paths(paths.opp_of[keep], paths.stage_idx[keep], paths.entered[keep], paths.won_at, lost_at, paths.lost_from, paths.base_dwell)


@dataclass
class _Acts:
    opp: np.ndarray
    t: np.ndarray
    type: np.ndarray
    inbound: np.ndarray
    contact: np.ndarray
    final_t: np.ndarray  # each deal's last stage entry


def _activities(rng: np.random.Generator, deals: _Deals, paths: _Paths) -> _Acts:
    """Activities at a rate that rises with quality, quiet for weeks before a loss."""
    n, created, quality, day = len(deals), deals.created, deals.quality, DAY
    final_t = np.full(n, -1, dtype=np.int64)
    np.maximum.at(final_t, paths.opp_of, paths.entered)
    is_won = paths.won_at >= 0
    ends_lost = (paths.lost_at >= 0) & ~is_won
    quiet_gap = rng.uniform(12, 45, n) * day
    active_until = np.where(ends_lost, np.maximum(created, final_t - quiet_gap.astype(np.int64)), final_t)
    active_days = np.maximum(active_until - created, day) / day
    rate = 1.9 * np.exp(0.45 * quality)  # per week
    n_act = rng.poisson(rate * active_days / 7.0)
    act_opp = np.repeat(np.arange(n), n_act)
    act_t = created[act_opp] + (rng.random(act_opp.size) * (active_until - created)[act_opp]).astype(np.int64)
    qa = quality[act_opp]
    type_logits = np.stack([np.zeros_like(qa), 0.1 + 0 * qa, -0.5 + 0.4 * qa, -1.3 + 0.6 * qa, -1.8 + 0.3 * qa], axis=1)
    probs = np.exp(type_logits) / np.exp(type_logits).sum(axis=1, keepdims=True)
    act_type = _ACTIVITY_TYPES[(rng.random((act_opp.size, 1)) > probs.cumsum(axis=1)).sum(axis=1).clip(0, 4)]
    inbound = rng.random(act_opp.size) < _sigmoid(-0.6 + 0.8 * qa)
    n_contacts = 1 + rng.poisson(np.exp(0.35 * quality))
    contact = rng.integers(0, 1_000_000, act_opp.size) % n_contacts[act_opp]
    return _Acts(act_opp, act_t, act_type, inbound, contact, final_t)


def _tables(rng: np.random.Generator, deals: _Deals, paths: _Paths, acts: _Acts, config: StageConfig, end_s: int, seed: int):
    """The contract's four tables, everything after the export's time cut off."""
    n, created, day, k = len(deals), deals.created, DAY, len(config.open)
    names = np.array([*config.open, config.won, config.lost], dtype=object)
    stage_name = names[np.where(paths.stage_idx < 0, k + 1, paths.stage_idx)]
    keep_h = paths.entered <= end_s
    keep_a = acts.t <= end_s
    ids = np.char.add("OPP-", np.char.zfill(np.arange(n).astype(str), 7)).astype(object)

    def ts(seconds: np.ndarray) -> pd.Series:
        return pd.Series(pd.to_datetime(seconds, unit="s", utc=True)).astype(TS_DTYPE)

    expected_close = created + (paths.base_dwell.sum() * rng.uniform(0.7, 1.4, n) * day).astype(np.int64)
    closed_lost_now = np.zeros(n, dtype=bool)
    last_row = pd.Series(paths.stage_idx[keep_h]).groupby(paths.opp_of[keep_h]).last()
    closed_lost_now[last_row.index.to_numpy()] = last_row.to_numpy() == -1
    loss_reason = np.where(closed_lost_now, _LOSS_REASONS[(np.maximum(paths.lost_from, 0) + rng.integers(0, 3, n)) % 5], None)
    opportunities = pd.DataFrame(
        {
            "opportunity_id": ids,
            "created_at": ts(created),
            "amount": deals.amount.astype("float64"),
            "account_id": np.char.add("ACC-", deals.account.astype(str)).astype(object),
            "owner_id": np.char.add("rep-", deals.owner.astype(str)).astype(object),
            "team": deals.team.astype(object),
            "expected_close_date": ts(expected_close),
            "loss_reason": loss_reason.astype(object),
            "industry": deals.industry.astype(object),
            "region": deals.region.astype(object),
            "source": deals.source.astype(object),
            "company_size": deals.size.astype(object),
        }
    )
    history = pd.DataFrame(
        {"opportunity_id": ids[paths.opp_of[keep_h]], "stage": stage_name[keep_h], "entered_at": ts(paths.entered[keep_h]).to_numpy()}
    )
    activities = pd.DataFrame(
        {
            "opportunity_id": ids[acts.opp[keep_a]],
            "occurred_at": ts(acts.t[keep_a]).to_numpy(),
            "type": acts.type[keep_a].astype(object),
            "direction": np.where(acts.inbound[keep_a], "inbound", "outbound").astype(object),
            "contact_id": np.char.add("C-", (deals.account[acts.opp[keep_a]] * 10 + acts.contact[keep_a]).astype(str)).astype(object),
        }
    )
    fields = _field_history(ids, created, expected_close, deals.amount, acts.final_t, paths.won_at >= 0, paths.lost_at >= 0, end_s, np.random.default_rng(seed + 2))
    opportunities["expected_close_date"] = fields[fields["field"] == "expected_close_date"].groupby("opportunity_id")["value"].last().reindex(ids).pipe(
        lambda v: pd.to_datetime(v, utc=True).astype(TS_DTYPE)).to_numpy()
    return opportunities, history, activities, fields


def _field_history(ids, created, expected_close, amount, final_t, won, lost, end_s, rng) -> pd.DataFrame:
    """Amount and expected close date as a CRM's field history records them: both at creation,
    then a push of the close date each time a deal is still open when its date passes (deals
    heading for a loss linger, so they are pushed more: a known warning sign)."""
    day = 86_400
    closed = won | lost
    open_until = np.where(closed, final_t, end_s)
    rows_id, rows_field, rows_value, rows_t = [ids, ids], [np.full(len(ids), "amount"), np.full(len(ids), "expected_close_date")], [amount.astype(str), expected_close], [created, created]
    current = expected_close.copy()
    for _ in range(8):
        noticed = current + (rng.uniform(0, 3, len(ids)) * day).astype(np.int64)
        push = (noticed < open_until) & (noticed <= end_s)
        if not push.any():
            break
        new = noticed + (rng.uniform(14, 45, len(ids)) * day).astype(np.int64)
        rows_id.append(ids[push]), rows_field.append(np.full(int(push.sum()), "expected_close_date")), rows_value.append(new[push]), rows_t.append(noticed[push])
        current = np.where(push, new, current)
    value = [v if f[0] == "amount" else pd.to_datetime(v, unit="s", utc=True).strftime("%Y-%m-%dT%H:%M:%SZ").to_numpy() for v, f in zip(rows_value, rows_field, strict=True)]
    frame = pd.DataFrame(
        {
            "opportunity_id": np.concatenate(rows_id).astype(object),
            "field": np.concatenate(rows_field).astype(object),
            "value": np.concatenate(value).astype(object),
            "changed_at": pd.Series(pd.to_datetime(np.concatenate(rows_t), unit="s", utc=True)).astype(TS_DTYPE).to_numpy(),
        }
    )
    return frame[frame["changed_at"] <= pd.Timestamp(end_s, unit="s", tz="UTC")].reset_index(drop=True)


def _late_losses(opp_of: np.ndarray, stage_idx: np.ndarray, entered: np.ndarray, start_s: int, end_s: int, rng: np.random.Generator) -> np.ndarray:
    """When each deal's final loss is recorded, as a real org records it (measured: a third of
    losses entered in clean-ups of 10-22 deals on one day, the median loss closed 76 days after
    creation, two losses recorded for every win while the pipeline aged): a tenth within days,
    half one by one weeks to months late, the rest in org-wide clean-ups (the first months in,
    then every 30-90 days, each sweeping about half of the losses waiting since at least a week). A loss recorded
    after the export's end is not in it: the deal looks open, though it is dead."""
    day = 86_400
    last = np.full(opp_of.max() + 1 if len(opp_of) else 0, -1, dtype=np.int64)
    np.maximum.at(last, opp_of, entered)
    final_loss = np.flatnonzero((stage_idx == -1) & (entered == last[opp_of]))
    k = len(final_loss)
    u = rng.random(k)
    delay = np.where(u < 0.1, rng.uniform(0, 5, k), rng.uniform(21, 270, k)) * day
    # the first clean-up comes once the pipeline has aged (months in), then every 30-90 days
    clean_ups = start_s + rng.uniform(120, 200) * day + np.cumsum(rng.uniform(30, 90, int((end_s - start_s) / (30 * day)) + 8) * day)
    first = np.searchsorted(clean_ups, entered[final_loss] + 7 * day)
    at = first + rng.geometric(0.5, k) - 1  # each sweep catches about half of what waits
    swept = (u >= 0.6) & (at < len(clean_ups))
    out = entered.copy()
    out[final_loss] = np.where(swept, clean_ups[np.minimum(at, len(clean_ups) - 1)] + rng.uniform(0, 3600, k), entered[final_loss] + delay).astype(np.int64)
    return out


def _after_the_fact(
    opps: pd.DataFrame, hist: pd.DataFrame, acts: pd.DataFrame, fields: pd.DataFrame, config: StageConfig, rng: np.random.Generator, quick: float = 0.8
) -> tuple[pd.DataFrame, ...]:
    """The pipeline as a team that logs after the fact records it (measured on a real org): most
    won deals are entered at their last stage within a week of the win (many within the hour),
    nine in ten deals are created past the first stage, and lost deals linger. The deals still
    open at any date are then far less likely to win than the overall win rate says."""
    hist = hist.sort_values(["opportunity_id", "entered_at"], kind="stable").reset_index(drop=True)
    pos = hist.groupby("opportunity_id", sort=False).cumcount().to_numpy()
    ids = opps["opportunity_id"].to_numpy()
    last = hist.groupby("opportunity_id", sort=False).tail(1).set_index("opportunity_id")
    won = last["stage"].reindex(ids).eq(config.won).to_numpy()
    n = len(ids)
    quick_win = won & (rng.random(n) < quick)
    late_entry = ~quick_win & (rng.random(n) < 0.9)
    # quick wins: the last open stage entered shortly before the win, the rest never recorded
    win_at = last["entered_at"].reindex(ids).to_numpy()
    lead = np.where(rng.random(n) < 0.4, rng.uniform(0, 3600, n), rng.uniform(3600, 7 * 86400, n))
    entered_quick = pd.Series(pd.to_datetime(win_at) - pd.to_timedelta(lead, unit="s"), index=ids)
    per_row = pd.Series(hist["opportunity_id"].to_numpy())
    rows_of = per_row.groupby(per_row).size().reindex(ids).fillna(0).astype(int).to_numpy()
    # late entries: the history starts at a random row before the deal's first close (never the close itself)
    is_close = hist["stage"].isin([config.won, config.lost]).to_numpy()
    first_close = pd.Series(np.where(is_close, pos, 10**9)).groupby(per_row.to_numpy()).min().reindex(ids).fillna(10**9).to_numpy()
    open_rows = np.minimum(first_close, rows_of)
    start = np.where(late_entry & (open_rows > 1), (rng.random(n) * open_rows).astype(int).clip(1, None), 0)
    start = np.minimum(start, np.maximum(open_rows - 1, 0))
    start_of = pd.Series(start, index=ids)
    quick = pd.Series(quick_win, index=ids)
    row_start = start_of.reindex(hist["opportunity_id"]).to_numpy()
    row_quick = quick.reindex(hist["opportunity_id"]).to_numpy()
    n_rows = pd.Series(rows_of, index=ids).reindex(hist["opportunity_id"]).to_numpy()
    keep = np.where(row_quick, pos >= n_rows - 2, pos >= row_start)
    hist = hist[keep].reset_index(drop=True)
    first_rows = ~hist["opportunity_id"].duplicated()
    quick_first = first_rows & hist["opportunity_id"].map(quick).to_numpy()
    hist.loc[quick_first, "entered_at"] = hist.loc[quick_first, "opportunity_id"].map(entered_quick).dt.tz_convert("UTC").to_numpy()
    created = hist[first_rows.to_numpy()].set_index("opportunity_id")["entered_at"]
    opps = opps.assign(created_at=opps["opportunity_id"].map(created).astype(opps["created_at"].dtype))
    acts = acts[acts["occurred_at"].to_numpy() >= acts["opportunity_id"].map(created).to_numpy()].reset_index(drop=True)
    fields = fields[fields["changed_at"].to_numpy() >= fields["opportunity_id"].map(created).to_numpy()].reset_index(drop=True)
    return opps, hist, acts, fields
