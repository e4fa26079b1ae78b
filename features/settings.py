"""One settings object for every layer: `oppscore.toml`, overridden by OPPSCORE_* variables.

Environment wins over the file so that a deployment can change a key or a tracking URI
without editing the config that travels with the data.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

import tomli_w
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from features.errors import ConfigInvalid

DEFAULT_CONFIG = Path("oppscore.toml")


class _Section(BaseModel):
    """A section of oppscore.toml: an unknown key is a typo, and an error."""

    model_config = ConfigDict(extra="forbid")


class StageConfig(_Section):
    open: list[str] = Field(min_length=1, description="open stages, in pipeline order")
    won: str
    lost: str
    configured_weights: list[float] | None = Field(
        default=None, description="the hand-set stage probabilities the CRM uses today, one per open stage"
    )

    @model_validator(mode="after")
    def _consistent(self) -> StageConfig:
        names = [*self.open, self.won, self.lost]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be distinct, got {names}")
        if self.configured_weights is not None:
            if len(self.configured_weights) != len(self.open):
                raise ValueError(
                    f"configured_weights has {len(self.configured_weights)} values, expected one per open stage ({len(self.open)})"
                )
            if any(not 0 <= w <= 1 for w in self.configured_weights):
                raise ValueError("configured_weights must lie in [0, 1]")
        return self


PROJECT_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


class ProjectConfig(_Section):
    """One registered model, experiment and export per project: a second export trained in the
    same OPPSCORE_HOME gets its own champion instead of challenging another data's."""

    name: str | None = Field(default=None, pattern=PROJECT_NAME, description="letters, digits, '.', '_' or '-'")


def project_name(folder: Path) -> str:
    """A project name derived from an export's folder (what importers write into its config)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", folder.resolve().name).strip("-._")[:63]
    return name or "export"


class StallConfig(_Section):
    horizon_days: int = Field(default=30, ge=1, le=365)
    alert_precision: float = Field(
        default=0.7, gt=0, le=1,
        description="a stall alert flags the riskiest open deals for as long as their mean stall risk (the share of them expected to make no progress "
                    "within the horizon, the risk being calibrated) stays at or above this",
    )
    alert_max_share: float = Field(default=0.2, gt=0, le=1, description="and never more than this share of the open deals whose stall risk is known: a list short enough to work")


class WinConfig(_Section):
    horizon_days: int | None = Field(
        default=None, ge=7, le=730,
        description="a win probability is the chance of a win within this many days of the date scored; default: from the data (the time from snapshot to win that covers 90 % of wins)",
    )


class SegmentConfig(_Section):
    columns: list[str] = Field(default_factory=list)


class SnapshotConfig(_Section):
    every_days: int = Field(default=7, ge=1, le=90, description="how often an open opportunity is observed for training")


class ServingConfig(_Section):
    max_batch: int = Field(default=1000, ge=1)
    max_events: int = Field(default=10_000, ge=1, description="events in one POST /v1/events")
    max_body_bytes: int = Field(default=10_000_000, ge=1_000)
    reload_seconds: float = Field(default=10.0, gt=0, description="how often the service asks the registry for a new champion")
    record_scores: bool = Field(default=False, description="keep what the CRM sends to POST /v1/score in score history (opt-in)")
    request_seconds: float = Field(default=30.0, gt=0, le=3600, description="a request must arrive whole within this many seconds, or its connection is closed")
    shadow: str | None = Field(default=None, description="a registered version that `oppscore score` runs beside the champion; its scores are recorded for the track record, never answered")
    database_seconds: float = Field(default=3.0, gt=0, le=60, description="a request waits this long for the score history's and events' database at most (it gives up on a lock a second sooner, so that a refusal is certain)")
    max_in_flight: int = Field(default=32, ge=1, description="requests a worker works on at once; past it, 503 with Retry-After at once instead of a queue that grows")
    queue_seconds: float = Field(default=0.5, gt=0, le=60, description="a request that waited this long for a busy worker before it started is answered 503 with Retry-After")


class MonitorConfig(_Section):
    """When the track record says to retrain or to look at the data (`oppscore monitor`)."""

    window_days: int = Field(default=60, ge=7, le=730, description="the realised figures the verdict reads: scores made within this many days before the latest one whose outcome is known")
    min_resolved: int = Field(default=100, ge=10, description="resolved scores needed before realised figures count for the verdict")
    log_loss_tolerance: float = Field(default=0.02, ge=0, le=1, description="realised log loss may exceed the backtest's by this much before it counts as worse")
    psi_alert: float = Field(default=0.25, gt=0, description="a feature's (or the score's) population stability index from which it counts as drifted (0.25: the usual 'major shift')")
    silent_share: float = Field(default=0.98, gt=0, le=1, description="a feature whose rows are this share zero or missing, where training saw values, has gone silent")


SALESFORCE_FIELDS = {"win_probability": "Win_Probability__c", "stall_risk": "Stall_Risk__c", "score": "Opp_Score__c", "grade": "Opp_Grade__c",
                     "reasons": "Opp_Reasons__c", "scored_at": "Opp_Scored_At__c"}
HUBSPOT_PROPERTIES = {"win_probability": "oppscore_win_probability", "stall_risk": "oppscore_stall_risk", "score": "oppscore_score", "grade": "oppscore_grade",
                      "reasons": "oppscore_reasons", "scored_at": "oppscore_scored_at"}
SALESFORCE_FIELD_NAME = r"^[A-Za-z][A-Za-z0-9_]{0,39}__c$"  # and no double or trailing underscore before __c
HUBSPOT_PROPERTY_NAME = r"^[a-z][a-z0-9_]{0,99}$"


class CrmConfig(_Section):
    """Where scores go back into the CRM (`oppscore export-scores`): the field (or property) each
    output is written to, and the CRM's address. Credentials come from the environment only
    (SALESFORCE_ACCESS_TOKEN, HUBSPOT_ACCESS_TOKEN), never from a file that travels with data."""

    salesforce_fields: dict[str, str] = Field(default_factory=lambda: dict(SALESFORCE_FIELDS), description="output → Opportunity field API name")
    hubspot_properties: dict[str, str] = Field(default_factory=lambda: dict(HUBSPOT_PROPERTIES), description="output → deal property internal name")
    reasons_length: int = Field(default=255, ge=40, le=131_072, description="the reasons field's length: Salesforce Text Area holds 255 characters, Long Text Area more")
    salesforce_api_version: str = Field(default="62.0", pattern=r"^\d{2}\.0$")
    hubspot_base_url: str = "https://api.hubapi.com"
    poll_seconds: float = Field(default=5.0, gt=0, le=300, description="how often a Bulk API job is asked whether it is done")
    push_timeout_seconds: float = Field(default=1800.0, gt=0, description="a push gives up (and says where it stood) after this long")

    @field_validator("salesforce_fields", "hubspot_properties")
    @classmethod
    def _every_output_named(cls, value: dict[str, str], info) -> dict[str, str]:
        defaults, rule, what = (SALESFORCE_FIELDS, SALESFORCE_FIELD_NAME, "a custom field API name: a letter, then letters, digits or single underscores, at most 40 before __c (Win_Probability__c)") \
            if info.field_name == "salesforce_fields" else (HUBSPOT_PROPERTIES, HUBSPOT_PROPERTY_NAME, "a property internal name: lower-case letters, digits and underscores, starting with a letter")
        unknown = sorted(set(value) - set(defaults))
        if unknown:
            raise ValueError(f"unknown outputs {unknown}; expected some of {sorted(defaults)}")
        merged = {**defaults, **value}
        stem = lambda v: v.removesuffix("__c") if info.field_name == "salesforce_fields" else v  # noqa: E731
        bad = {k: v for k, v in merged.items() if not re.match(rule, v) or "__" in stem(v) or stem(v).endswith("_")}
        if bad:
            raise ValueError(f"{bad}: each must be {what}")
        if len(set(merged.values())) != len(merged):
            raise ValueError(f"two outputs share a name: {merged}")
        return merged


class Settings(BaseSettings):
    """Everything a run depends on."""

    model_config = SettingsConfigDict(env_prefix="OPPSCORE_", env_nested_delimiter="__", extra="forbid")

    project: ProjectConfig = ProjectConfig()
    stages: StageConfig | None = None  # None: infer the order from the data, and say so
    stall: StallConfig = StallConfig()
    win: WinConfig = WinConfig()
    segments: SegmentConfig = SegmentConfig()
    snapshots: SnapshotConfig = SnapshotConfig()
    serving: ServingConfig = ServingConfig()
    monitor: MonitorConfig = MonitorConfig()
    crm: CrmConfig = CrmConfig()
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    home: Path = Field(default=Path(".oppscore"), description="local state: the embedded MLflow store")
    champion_dir: Path = Field(default=Path("models/champion"))
    model_name: str = "oppscore"
    experiment: str = "oppscore"
    mlflow_tracking_uri: str | None = Field(
        default=None, validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "mlflow_tracking_uri")
    )
    database_url: str | None = Field(default=None, description="score history and events: any SQLAlchemy URL (default: SQLite under home)")
    salesforce_instance_url: str | None = Field(default=None, validation_alias=AliasChoices("SALESFORCE_INSTANCE_URL", "salesforce_instance_url"))
    salesforce_access_token: SecretStr | None = Field(default=None, validation_alias=AliasChoices("SALESFORCE_ACCESS_TOKEN", "salesforce_access_token"))
    hubspot_access_token: SecretStr | None = Field(default=None, validation_alias=AliasChoices("HUBSPOT_ACCESS_TOKEN", "hubspot_access_token"))
    # an OAuth refresh grant, for a push that outlives its access token (a nightly job)
    salesforce_refresh_token: SecretStr | None = Field(default=None, validation_alias=AliasChoices("SALESFORCE_REFRESH_TOKEN", "salesforce_refresh_token"))
    salesforce_client_id: str | None = Field(default=None, validation_alias=AliasChoices("SALESFORCE_CLIENT_ID", "salesforce_client_id"))
    salesforce_client_secret: SecretStr | None = Field(default=None, validation_alias=AliasChoices("SALESFORCE_CLIENT_SECRET", "salesforce_client_secret"))
    hubspot_refresh_token: SecretStr | None = Field(default=None, validation_alias=AliasChoices("HUBSPOT_REFRESH_TOKEN", "hubspot_refresh_token"))
    hubspot_client_id: str | None = Field(default=None, validation_alias=AliasChoices("HUBSPOT_CLIENT_ID", "hubspot_client_id"))
    hubspot_client_secret: SecretStr | None = Field(default=None, validation_alias=AliasChoices("HUBSPOT_CLIENT_SECRET", "hubspot_client_secret"))
    config_path: Path | None = None

    @model_validator(mode="after")
    def _per_project(self) -> Settings:
        """A named project's model, experiment and export, unless set explicitly."""
        name = self.project.name
        if name:
            given = self.model_fields_set
            if "model_name" not in given:
                self.model_name = f"oppscore-{name}"
            if "experiment" not in given:
                self.experiment = f"oppscore-{name}"
            if "champion_dir" not in given:
                self.champion_dir = Path("models") / name / "champion"
        return self

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return env_settings, init_settings

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.home / 'mlflow.db').resolve()}"

    @property
    def history_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'history.db').resolve()}"

    @property
    def artifact_root(self) -> str:
        return (self.home / "mlartifacts").resolve().as_uri()


def load_settings(config: Path | None = None) -> Settings:
    """Read CONFIG (or ./oppscore.toml when present); a missing explicit file is an error."""
    path = config
    if path is None and DEFAULT_CONFIG.exists():
        path = DEFAULT_CONFIG
    data: dict[str, Any] = {}
    if path is not None:
        if not path.exists():
            raise ConfigInvalid(f"{path}: config file not found")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigInvalid(f"{path}: not valid TOML ({exc})") from exc
        data["config_path"] = path
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigInvalid(_describe(exc, path)) from None


def _describe(exc: ValidationError, path: Path | None) -> str:
    """Each problem as "FILE: key a.b: what is wrong", a typo named as an unknown key."""
    where = str(path) if path is not None else "settings (OPPSCORE_* variables)"
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        if error["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key {key!r}; expected one of the documented sections and keys (README, Settings)")
        else:
            lines.append(f"{where}: key {key!r}: {error['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def settings_toml(stages: StageConfig, segments: list[str], horizon_days: int = 30, header: str = "", project: str | None = None) -> str:
    """The text of an oppscore.toml; generators and importers write the config beside their data.
    `header`: comment lines saying where the values came from."""
    doc = {
        **({"project": {"name": project}} if project else {}),
        "stages": stages.model_dump(exclude_none=True),
        "stall": {"horizon_days": horizon_days},
        "segments": {"columns": list(segments)},
    }
    comments = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return comments + tomli_w.dumps(doc)
