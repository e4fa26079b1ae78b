"""One settings object for every layer: `oppscore.toml`, overridden by OPPSCORE_* variables.

Environment wins over the file so that a deployment can change a key or a tracking URI
without editing the config that travels with the data.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

DEFAULT_CONFIG = Path("oppscore.toml")


class ConfigInvalid(ValueError):
    """The config file cannot be read or does not fit the schema; the message says where."""


class StageConfig(BaseModel):
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


class StallConfig(BaseModel):
    horizon_days: int = Field(default=30, ge=1, le=365)


class SegmentConfig(BaseModel):
    columns: list[str] = Field(default_factory=list)


class SnapshotConfig(BaseModel):
    every_days: int = Field(default=7, ge=1, le=90, description="how often an open opportunity is observed for training")


class ServingConfig(BaseModel):
    max_batch: int = Field(default=1000, ge=1)
    max_body_bytes: int = Field(default=10_000_000, ge=1_000)
    reload_seconds: float = Field(default=30.0, gt=0)


class Settings(BaseSettings):
    """Everything a run depends on."""

    model_config = SettingsConfigDict(env_prefix="OPPSCORE_", env_nested_delimiter="__", extra="ignore")

    stages: StageConfig | None = None  # None: infer the order from the data, and say so
    stall: StallConfig = StallConfig()
    segments: SegmentConfig = SegmentConfig()
    snapshots: SnapshotConfig = SnapshotConfig()
    serving: ServingConfig = ServingConfig()
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    home: Path = Field(default=Path(".oppscore"), description="local state: the embedded MLflow store")
    champion_dir: Path = Field(default=Path("models/champion"))
    model_name: str = "oppscore"
    experiment: str = "oppscore"
    mlflow_tracking_uri: str | None = Field(
        default=None, validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "mlflow_tracking_uri")
    )
    config_path: Path | None = None

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
    except ValueError as exc:
        raise ConfigInvalid(f"{path or 'settings'}: {exc}") from exc


def settings_toml(stages: StageConfig, segments: list[str], horizon_days: int = 30) -> str:
    """The text of an oppscore.toml; generators and importers write the config beside their data."""

    def q(items: list[str]) -> str:
        return "[" + ", ".join(f'"{s}"' for s in items) + "]"

    lines = ["[stages]", f"open = {q(stages.open)}", f'won = "{stages.won}"', f'lost = "{stages.lost}"']
    if stages.configured_weights:
        lines.append("configured_weights = [" + ", ".join(f"{w:g}" for w in stages.configured_weights) + "]")
    lines += ["", "[stall]", f"horizon_days = {horizon_days}", "", "[segments]", f"columns = {q(segments)}", ""]
    return "\n".join(lines)
