"""The bundle as an MLflow pyfunc, for `mlflow models serve` and any MLflow consumer.

Input: a DataFrame, one row per opportunity, with its columns and `stage_history` and
`activities` as lists of records (the API's request shape), and an optional `as_of`.
"""

from __future__ import annotations

from pathlib import Path

import mlflow.models
import mlflow.pyfunc
import pandas as pd

from features.frame import open_points
from features.payload import records_to_tables
from features.times import to_utc, utc_now
from scoring.bundle import Bundle
from scoring.score import score_points


class BundleModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.bundle = Bundle.load(Path(context.artifacts["bundle"]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        records = model_input.to_dict("records")
        # a pyfunc call is a request: it decides "now" once, as the service does per request
        now = utc_now()
        as_of = to_utc(records[0]["as_of"]) if records and records[0].get("as_of") else now
        validated = records_to_tables(records, self.bundle.spec.stages.config, now=max(now, as_of))
        points = open_points(validated.tables, self.bundle.spec.stages, as_of)
        scored = score_points(self.bundle, validated.tables, points)
        scored["as_of"] = scored["as_of"].astype(str)
        scored["model_version"] = self.bundle.version
        return scored


# models-from-code: MLflow loads this file and takes the model set here, so nothing is pickled
mlflow.models.set_model(BundleModel())
