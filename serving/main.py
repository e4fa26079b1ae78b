"""The app for `uvicorn serving.main:app` (and for multi-worker `oppscore serve`): settings from
the environment and ./oppscore.toml, like every other command."""

from __future__ import annotations

import os
from pathlib import Path

from features.settings import load_settings
from serving.app import create_app

_config = os.environ.get("OPPSCORE_SERVE_CONFIG") or None
_data = os.environ.get("OPPSCORE_SERVE_DATA") or None
app = create_app(load_settings(Path(_config) if _config else None), data=Path(_data) if _data else None)
