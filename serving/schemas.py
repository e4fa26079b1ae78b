"""The HTTP contract: what a CRM sends and what it gets back, with examples for the OpenAPI page.

Bad input is answered 422 naming the field path. A batch is all-or-nothing: when any
opportunity is malformed the whole batch is rejected with every problem listed, so a CRM never
has to reconcile a half-scored batch (it fixes the rows named and sends the batch again).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict
from pydantic_core import core_schema

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

MAX_AMOUNT = 1e15  # past any deal: sums of a batch stay finite

# What the schema says is what is accepted (schemathesis checks both ways). Times are ISO 8601
# text from 1970 to 2199 (computed in nanoseconds: a CRM's dates lie well within 1678-2262),
# naive = UTC; a bare number could be seconds or milliseconds and is refused. The pattern
# knows each month's days and the leap years, so every text it allows is a real time; it is
# matched, and the time parsed, inside pydantic-core (a Python validator per timestamp cost
# half of parsing a batch).
_YEAR = r"(19[7-9]\d|2[01]\d\d)"
_MONTH_DAY = r"((0[1-9]|1[0-2])-(0[1-9]|1\d|2[0-8])|(0[13-9]|1[0-2])-(29|30)|(0[13578]|1[02])-31)"
_LEAP_YEAR = r"(19(7[26]|8[048]|9[26])|20([02468][048]|[13579][26])|21(0[48]|[2468][048]|[13579][26]))"
_CLOCK = r"([Tt ]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d([.,]\d{1,9})?)?([Zz]|[+-]([01]\d|2[0-3]):?[0-5]\d)?)?"
TIME_PATTERN = rf"^({_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29){_CLOCK}$"
TIME_SAID = "an ISO 8601 time from 1970 to 2199 as text, e.g. 2026-09-30T12:00:00Z or 2026-09-30 (naive = UTC)"
# Ids are the CRM's record ids: printable, without spaces, and without '/' (an id with one
# could be stored but never fetched by GET /v1/opportunities/{id}; '?', '#' and '%' are fine
# percent-encoded). Character ranges are spelled out (no \s): JSON Schema's, Python's and
# pydantic-core's regex engines disagree on which characters \s matches.
ID_PATTERN = r"^[^\x00-\x20\x7f-\x9f/]{1,200}$"
ID_SAID = "1 to 200 characters, none of them a space, a control character or /"
TEXT_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"  # names and free text: no control characters (NUL included)
AMOUNT_TEXT = r"^\d{1,15}(\.\d{1,9})?$"  # a field history's amount value: a plain decimal below 10^15


def _constrained(inner: core_schema.CoreSchema, error: str, said: str, json: dict):
    """A type checked inside pydantic-core, with one plain message and the JSON schema given."""

    class Checked:
        @classmethod
        def __get_pydantic_core_schema__(cls, source, handler):
            return core_schema.custom_error_schema(inner, custom_error_type=error, custom_error_message=said)

        @classmethod
        def __get_pydantic_json_schema__(cls, schema, handler):
            return {**json, "description": said}

    return Checked


Timestamp = Annotated[datetime, _constrained(core_schema.chain_schema([core_schema.str_schema(pattern=TIME_PATTERN), core_schema.datetime_schema()]),
                                             "timestamp", f"expected {TIME_SAID}", {"type": "string", "pattern": TIME_PATTERN})]
Id = Annotated[str, _constrained(core_schema.str_schema(pattern=ID_PATTERN), "record_id", f"expected a record id of {ID_SAID}",
                                 {"type": "string", "pattern": ID_PATTERN, "minLength": 1, "maxLength": 200})]


def _text(max_length: int, min_length: int = 0) -> Any:
    """Free text of `min_length` to `max_length` characters, no control characters (NUL included)."""
    said = f"text of {min_length} to {max_length} characters without control characters" if min_length else f"text of at most {max_length} characters without control characters"
    return Annotated[str, _constrained(core_schema.str_schema(pattern=TEXT_PATTERN, min_length=min_length, max_length=max_length), "text", f"expected {said}",
                                       {"type": "string", "pattern": TEXT_PATTERN, "maxLength": max_length, **({"minLength": min_length} if min_length else {})})]


Name = _text(200, 1)  # a stage, an activity type
Short = _text(200)  # owner, account, contact, team
Long = _text(1000)  # a loss reason
AmountText = Annotated[str, _constrained(core_schema.str_schema(pattern=AMOUNT_TEXT), "amount_text", "expected the new amount as a plain decimal from 0 to below 10^15, e.g. 42000 or 42000.5",
                                         {"type": "string", "pattern": AMOUNT_TEXT})]
DateText = Annotated[str, _constrained(core_schema.str_schema(pattern=TIME_PATTERN), "date_text", f"expected the new close date as {TIME_SAID}",
                                       {"type": "string", "pattern": TIME_PATTERN})]


SegmentValue = _text(500) | Annotated[float, Strict(), Field(allow_inf_nan=False)] | bool | None  # a segment attribute; a number sent as text stays text


class StageEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stage: Name = Field(description="a stage name from the model's stage list (GET /v1/model)")
    entered_at: Timestamp = Field(description="when the stage was entered; ISO 8601, naive = UTC")


class Activity(BaseModel):
    model_config = ConfigDict(extra="forbid")
    occurred_at: Timestamp = Field(description="ISO 8601, naive = UTC")
    type: Name = Field(description="call, email, meeting, demo, proposal_sent, … (free text)")
    direction: Literal["inbound", "outbound"] | None = None
    owner_id: Short | None = None
    contact_id: Short | None = None


class _Change(BaseModel):
    """A change of a tracked field (Salesforce's OpportunityHistory, HubSpot's property history)."""

    model_config = ConfigDict(extra="forbid")
    changed_at: Timestamp = Field(description="when it changed; ISO 8601, naive = UTC")


class AmountChange(_Change):
    field: Literal["amount"]
    value: AmountText = Field(description="the new amount as text: a plain decimal from 0 to below 10^15")


class CloseDateChange(_Change):
    field: Literal["expected_close_date"]
    value: DateText = Field(description=f"the new close date as text: {TIME_SAID}")


class OtherChange(_Change):
    field: Literal["probability", "forecast_category"]
    value: Name = Field(description="the new value as text")


FieldChange = Annotated[AmountChange | CloseDateChange | OtherChange, Field(discriminator="field")]


class Opportunity(BaseModel):
    """One opportunity with its own history; any extra scalar field is a segment attribute."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [EXAMPLE_OPPORTUNITY]})
    __pydantic_extra__: dict[str, SegmentValue] = Field(init=False)
    opportunity_id: Id
    created_at: Timestamp
    amount: Annotated[float, Strict()] = Field(ge=0, le=MAX_AMOUNT, allow_inf_nan=False, description="expected deal value, ≥ 0 and ≤ 10^15 (a number: not text, not a boolean)")
    account_id: Short | None = None
    owner_id: Short | None = None
    team: Short | None = None
    expected_close_date: Timestamp | None = Field(default=None, description="ISO 8601, naive = UTC; not a model input (its value at scoring time is not what was expected earlier)")
    loss_reason: Long | None = Field(default=None, description="for lost deals; not a model input")
    stage_history: list[StageEntry] = Field(min_length=1, max_length=1000, description="stage entries, in any order (they are ordered by their times)")
    activities: list[Activity] = Field(default_factory=list, max_length=10_000)
    field_history: list[FieldChange] = Field(default_factory=list, max_length=1000, description="amount and close-date changes, for the point-in-time close-date and amount features")



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
    status: Literal["open", "won", "lost", "not yet created", "stage unknown to the model", "no stage yet"] = Field(
        description="only open opportunities are scored; 'no stage yet': a record sent as an event whose first stage has not arrived")
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


class Unavailable(BaseModel):
    """A 503: the service could not do it now. Sending the same request again later is safe
    (events are stored once per id); Retry-After says when."""

    detail: str
    cause: str | None = Field(default=None, description="refused, timed out, disk full, busy, schema, starting, failed (the database); overloaded; no model")
    stored: Literal["no", "maybe"] | None = Field(default=None, description="for a write: no = nothing was stored; maybe = the database may have committed it after the deadline")
    resend: str | None = Field(default=None, description="what sending again does")


class StageRow(StageEntry):
    opportunity_id: Id


class ActivityRow(Activity):
    opportunity_id: Id


class AmountRow(AmountChange):
    opportunity_id: Id


class CloseDateRow(CloseDateChange):
    opportunity_id: Id


class OtherRow(OtherChange):
    opportunity_id: Id


FieldRow = Annotated[AmountRow | CloseDateRow | OtherRow, Field(discriminator="field")]


class OpportunityRecord(BaseModel):
    """An opportunity's record, whole or in part: the fields it names replace the stored ones (null
    empties one, but never created_at or amount), the others stay. A new opportunity needs
    created_at and amount: until one of its events brings them, it is not found."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, SegmentValue] = Field(init=False)
    opportunity_id: Id
    created_at: Timestamp = Field(default=None, description="when it was created; may be left out, never null")
    amount: Annotated[float, Strict()] = Field(default=None, ge=0, le=MAX_AMOUNT, allow_inf_nan=False, description="may be left out, never null")
    account_id: Short | None = None
    owner_id: Short | None = None
    team: Short | None = None
    expected_close_date: Timestamp | None = None
    loss_reason: Long | None = None


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event_id: Id = Field(description="the sender's id of this event: sending it again changes nothing (DELETE /v1/events/{event_id} takes it back)")


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


class EventDeleted(BaseModel):
    deleted: str = Field(description="the event id taken back")
    table: str
    opportunity_id: str


class OpportunityScore(Score):
    model_version: str
    model_source: Literal["registry", "export"]
    as_of: datetime = Field(description="the time scored: the newest time of the served export or of any event (or the as_of asked for)")
    events: int = Field(description="events laid over the export's rows of this opportunity")


ERRORS = {
    401: {"model": ErrorBody, "description": "missing or invalid API key"},
    413: {"model": ErrorBody, "description": "batch or body too large"},
    422: {"model": ErrorBody, "description": "malformed request: every problem, each with its field path"},
    503: {"model": Unavailable, "description": "no model loaded, too busy (Retry-After), or the database did not answer (the body says whether anything may have been stored)"},
}
