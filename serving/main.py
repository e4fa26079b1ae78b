"""The app factory for `uvicorn --factory serving.main:app_from_environment` (and for
multi-worker `oppscore serve`): settings from the environment and ./oppscore.toml, like every
other command. Nothing is built at import."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI

from features.settings import load_settings
from serving.app import create_app
from serving.protocol import DeadlineProtocol


def app_from_environment() -> FastAPI:
    config = os.environ.get("OPPSCORE_SERVE_CONFIG") or None
    data = os.environ.get("OPPSCORE_SERVE_DATA") or None
    settings = load_settings(Path(config) if config else None)
    DeadlineProtocol.seconds = settings.serving.request_seconds  # this worker's connections
    return create_app(settings, data=Path(data) if data else None)
