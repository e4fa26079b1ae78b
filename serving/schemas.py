"""The HTTP contract: what a CRM sends and what it gets back, with examples for the OpenAPI page.

Bad input is answered 422 naming the field path. A batch is all-or-nothing: when any
opportunity is malformed the whole batch is rejected with every problem listed, so a CRM never
has to reconcile a half-scored batch (it fixes the rows named and sends the batch again).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, model_validator

EXAMPLE_OPPORTUNITY = {
    "opportunity_id": "OPP-0001",
    "created_at": "2026-08-03T09:00:00Z",
    "amount": 42000,
    "owner_id": "rep-7",
    "account_id": "ACC-12",
    "team": "Alpha",
    "industry": "software",
    "region": "north",
    "source": "referral",
    "company_size": "medium",
    "stage_history": [
        {"stage": "Prospecting", "entered_at": "2026-08-03T09:00:00Z"},
        {"stage": "Qualification", "entered_at": "2026-08-14T10:30:00Z"},
        {"stage": "Needs Analysis", "entered_at": "2026-09-01T08:00:00Z"},
    ],
    "activities": [
        {"occurred_at": "2026-09-10T15:00:00Z", "type": "meeting", "direction": "outbound", "contact_id": "C-1"},
        {"occurred_at": "2026-09-22T11:00:00Z", "type": "email", "direction": "inbound", "contact_id": "C-2"},
    ],
}

Scalar = str | int | float | bool | None
# Times are computed in nanoseconds: any two of a request's must lie within 292 years of each
# other, and every one within 1678-2262; a CRM's dates lie within these. The bounds are checked
# by pydantic-core itself (a Python validator per timestamp cost half of parsing a batch)
_EARLIEST, _LATEST = datetime(1970, 1, 1, tzinfo=UTC), datetime(2199, 12, 31, tzinfo=UTC)
MAX_AMOUNT = 1e15  # past any deal: sums of a batch stay finite
_EPOCH = re.compile(r"\s*[+-]?\d+(\.\d*)?\s*")


def _text_only(value: object) -> object:
    """Times as ISO 8601 text: a bare number could be seconds or milliseconds, and is refused,
    in a string too ("1775000000")."""
    if isinstance(value, (int, float)) or (isinstance(value, str) and _EPOCH.fullmatch(value)):
        raise ValueError("a timestamp as ISO 8601 text (2026-09-30T12:00:00Z), not a number")
    return value


Timestamp = Annotated[datetime, Field(ge=_EARLIEST, le=_LATEST), BeforeValidator(_text_only)]  # the bounds checked inside pydantic-core


class StageEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stage: str = Field(min_length=1, description="a stage name from the model's stage list (GET /v1/model)")
    entered_at: Timestamp = Field(description="when the stage was entered; ISO 8601, naive = UTC")


class Activity(BaseModel):
    model_config = ConfigDict(extra="forbid")
    occurred_at: Timestamp = Field(description="ISO 8601, naive = UTC")
    type: str = Field(min_length=1, description="call, email, meeting, demo, proposal_sent, … (free text)")
    direction: Literal["inbound", "outbound"] | None = None
    owner_id: str | None = None
    contact_id: str | None = None


class FieldChange(BaseModel):
    """A change of a tracked field (Salesforce's OpportunityHistory, HubSpot's property history)."""

    model_config = ConfigDict(extra="forbid")
    field: Literal["amount", "expected_close_date", "probability", "forecast_category"]
    value: str = Field(min_length=1, max_length=100, description="the new value as text: a number for amount, an ISO 8601 date for expected_close_date")
    changed_at: Timestamp = Field(description="when it changed; ISO 8601, naive = UTC")

    def problem(self) -> str | None:
        """What is wrong with the value for its field (an amount is a number, a close date a date)."""
        if self.field == "amount":
            try:
                ok = math.isfinite(float(self.value)) and 0 <= float(self.value) <= MAX_AMOUNT
            except ValueError:
                ok = False
            return None if ok else f"found {self.value!r}, expected a number from 0 to 10^15 (the new amount)"
        if self.field == "expected_close_date":
            try:
                ok = _EARLIEST <= _utc(datetime.fromisoformat(self.value.replace("Z", "+00:00"))) <= _LATEST
            except ValueError:
                ok = False
            return None if ok else f"found {self.value!r}, expected an ISO 8601 date from {_EARLIEST:%Y-%m-%d} to {_LATEST:%Y-%m-%d} (the new close date)"
        return None


class Opportunity(BaseModel):
    """One opportunity with its own history; any extra scalar field is a segment attribute."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [EXAMPLE_OPPORTUNITY]})
    opportunity_id: str = Field(min_length=1, max_length=200)
    created_at: Timestamp
    amount: Annotated[float, Strict()] = Field(ge=0, le=MAX_AMOUNT, allow_inf_nan=False, description="expected deal value, ≥ 0 and ≤ 10^15 (a number: not text, not a boolean)")
    account_id: str | None = None
    owner_id: str | None = None
    team: str | None = None
    expected_close_date: Timestamp | None = Field(default=None, description="ISO 8601, naive = UTC; not a model input (its value at scoring time is not what was expected earlier)")
    loss_reason: str | None = Field(default=None, description="for lost deals; not a model input")
    stage_history: list[StageEntry] = Field(min_length=1, max_length=1000, description="stage entries, oldest first")
    activities: list[Activity] = Field(default_factory=list, max_length=10_000)
    field_history: list[FieldChange] = Field(default_factory=list, max_length=1000, description="amount and close-date changes, for the point-in-time close-date and amount features")

    @model_validator(mode="after")
    def _check(self) -> Opportunity:
        for name, value in (self.model_extra or {}).items():
            if not isinstance(value, Scalar):
                raise ValueError(f"segment attribute {name!r} must be a string, number, boolean or null")
        for j, change in enumerate(self.field_history):
            said = change.problem()
            if said:
                raise ValueError(f"field_history[{j}].value: {said}")
        times = [e.entered_at for e in self.stage_history]
        for j in range(1, len(times)):
            try:
                out_of_order = times[j] < times[j - 1]
            except TypeError:  # naive beside aware: compare as UTC
                out_of_order = _utc(times[j]) < _utc(times[j - 1])
            if out_of_order:
                raise ValueError(f"stage_history[{j}].entered_at is before stage_history[{j - 1}].entered_at; expected entries oldest first")
        return self


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"as_of": "2026-09-30T00:00:00Z", "opportunities": [EXAMPLE_OPPORTUNITY]}]})
    as_of: Timestamp | None = Field(default=None, description="score as of this time (default: now); rows after it are ignored")
    opportunities: list[Opportunity] = Field(min_length=1, description="the batch; its size limit is in GET /v1/model")

    def records(self) -> list[dict[str, Any]]:
        return [o.model_dump() for o in self.opportunities]


class Factor(BaseModel):
    factor: str = Field(description="the readable factor, e.g. 'recent activity'")
    feature: str = Field(description="the feature that speaks for it")
    value: float | str | None
    contribution: float = Field(description="its push on the win score, in log-odds (+ raises, - lowers)")
    direction: Literal["raises", "lowers"]
    sentence: str


class Change(BaseModel):
    factor: str
    points: float = Field(description="its share of the score's change since the previous score")
    sentence: str = Field(description="the factor now, in words")


class Score(BaseModel):
    opportunity_id: str
    status: Literal["open", "won", "lost", "not yet created", "stage unknown to the model"] = Field(description="only open opportunities are scored")
    stage: str | None = None
    win_probability: float | None = Field(default=None, ge=0, le=1)
    stall_risk: float | None = Field(default=None, ge=0, le=1, description="chance of no forward move in the stall horizon")
    score: int | None = Field(default=None, ge=1, le=99)
    grade: Literal["A", "B", "C", "D"] | None = None
    expected_value: float | None = Field(default=None, description="amount × win probability")
    top_factors: list[Factor] = Field(default_factory=list)
    previous_score: int | None = Field(default=None, description="the last score recorded for this opportunity before as_of (score history), if any")
    score_change: int | None = None
    why_changed: list[Change] | None = Field(default=None, description="the factors whose contribution moved most since the previous score")


class ScoreResponse(BaseModel):
    model_version: str
    model_source: Literal["registry", "export"]
    as_of: datetime
    scores: list[Score]


class Problem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    detail: list[Problem] | str


OpportunityId = Annotated[str, Field(min_length=1, max_length=200, description="the CRM's record id")]


class StageRow(StageEntry):
    opportunity_id: OpportunityId


class ActivityRow(Activity):
    opportunity_id: OpportunityId


class FieldRow(FieldChange):
    opportunity_id: OpportunityId

    @model_validator(mode="after")
    def _value(self) -> FieldRow:
        said = self.problem()
        if said:
            raise ValueError(f"value: {said}")
        return self


class OpportunityRecord(BaseModel):
    """An opportunity's record, whole or in part: the fields it names replace the stored ones (null
    empties one), the others stay. A new opportunity needs created_at and amount."""

    model_config = ConfigDict(extra="allow")
    opportunity_id: OpportunityId
    created_at: Timestamp | None = None
    amount: Annotated[float, Strict()] | None = Field(default=None, ge=0, le=MAX_AMOUNT, allow_inf_nan=False)
    account_id: str | None = None
    owner_id: str | None = None
    team: str | None = None
    expected_close_date: Timestamp | None = None
    loss_reason: str | None = None

    @model_validator(mode="after")
    def _scalars(self) -> OpportunityRecord:
        for name, value in (self.model_extra or {}).items():
            if not isinstance(value, Scalar):
                raise ValueError(f"segment attribute {name!r} must be a string, number, boolean or null")
        return self


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event_id: str = Field(min_length=1, max_length=200, description="the sender's id of this event: sending it again changes nothing")


class OpportunityEvent(_Event):
    table: Literal["opportunities"]
    changed_at: Timestamp = Field(description="when the record changed in the CRM (LastModifiedDate, hs_lastmodifieddate): of two changes, the later stands")
    row: OpportunityRecord


class StageEvent(_Event):
    table: Literal["stage_history"]
    row: StageRow


class ActivityEvent(_Event):
    table: Literal["activities"]
    row: ActivityRow


class FieldEvent(_Event):
    table: Literal["field_history"]
    row: FieldRow


EXAMPLE_EVENTS = [
    {"event_id": "sf-00Q-1", "table": "opportunities", "changed_at": "2026-10-01T08:00:00Z",
     "row": {"opportunity_id": "OPP-0002", "created_at": "2026-10-01T08:00:00Z", "amount": 18000, "owner_id": "rep-3", "industry": "retail"}},
    {"event_id": "sf-hist-1", "table": "stage_history", "row": {"opportunity_id": "OPP-0002", "stage": "Prospecting", "entered_at": "2026-10-01T08:00:00Z"}},
    {"event_id": "sf-task-1", "table": "activities", "row": {"opportunity_id": "OPP-0002", "occurred_at": "2026-10-02T14:00:00Z", "type": "call", "direction": "outbound"}},
    {"event_id": "sf-fh-1", "table": "field_history", "row": {"opportunity_id": "OPP-0002", "field": "amount", "value": "21000", "changed_at": "2026-10-03T09:00:00Z"}},
]


class EventsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"events": EXAMPLE_EVENTS}]})
    events: list[Annotated[OpportunityEvent | StageEvent | ActivityEvent | FieldEvent, Field(discriminator="table")]] = Field(
        min_length=1, description="rows of the contract's tables, each with its event id; in any order")


class EventsResponse(BaseModel):
    accepted: int = Field(description="events stored now")
    duplicates: int = Field(description="events already stored (sent before): nothing changed")
    opportunities: list[str] = Field(description="the opportunities whose scores these events moved")
    stored: int = Field(description="events stored in all")


class OpportunityScore(Score):
    model_version: str
    model_source: Literal["registry", "export"]
    as_of: datetime = Field(description="the time scored: the newest time of the served export or of any event (or the as_of asked for)")
    events: int = Field(description="events laid over the export's rows of this opportunity")
