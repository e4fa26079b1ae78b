"""Maven Analytics "CRM Sales Opportunities" → canonical tables.

Mapping (the export has no per-stage history, only a current stage and two dates):
- stages: Prospecting > Engaging | won: Won | lost: Lost.
- created_at = engage_date, the first date the export knows for a deal; history is
  "Engaging" at engage_date, then "Won"/"Lost" at close_date when closed.
- deals still in Prospecting carry no date at all: they cannot be placed in time, so they
  are left out and counted in the import report (500 in the public file).
- amount = the product's list price (products.csv). close_value is not used: it is 0 for
  every lost deal, so it would hand the outcome to the model.
- owner_id = sales_agent; team = the agent's manager; region = regional_office (sales_teams.csv).
- account_id = account (empty for many open deals: kept empty); sector, office_location and
  a company_size band from employees come from accounts.csv.
- quirks fixed: product "GTXPro" is "GTX Pro" in products.csv; sector "technolgy" is "technology".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.errors import InputInvalid
from features.settings import StageConfig
from features.tables import TS_DTYPE, Tables

STAGES = StageConfig(open=["Prospecting", "Engaging"], won="Won", lost="Lost")
SEGMENTS = ["sector", "product", "region", "team", "company_size"]
PRODUCT_FIX = {"GTXPro": "GTX Pro"}
SECTOR_FIX = {"technolgy": "technology"}
FILES = ("sales_pipeline.csv", "accounts.csv", "products.csv", "sales_teams.csv")


@dataclass(frozen=True)
class Imported:
    tables: Tables
    stages: StageConfig
    segments: list[str]
    report: dict[str, int]


def _size_band(employees: pd.Series) -> pd.Series:
    bands = pd.cut(pd.to_numeric(employees, errors="coerce"), [0, 500, 2000, 5000, np.inf], labels=["small", "medium", "large", "enterprise"])
    return bands.astype("object")


def import_maven(folder: Path) -> Imported:
    missing = [f for f in FILES if not (folder / f).exists()]
    if missing:
        raise InputInvalid(f"{folder}: not a Maven CRM export, missing {', '.join(missing)}")
    read = lambda name: pd.read_csv(folder / name, dtype=str, keep_default_na=False, na_values=[""])  # noqa: E731
    pipe, accounts, products, teams = (read(f) for f in FILES)
    pipe["product"] = pipe["product"].replace(PRODUCT_FIX)
    accounts["sector"] = accounts["sector"].replace(SECTOR_FIX)
    dated = pipe[pipe["engage_date"].notna()].copy()
    report = {"deals in file": len(pipe), "left out: no date (Prospecting)": int(pipe["engage_date"].isna().sum())}

    price = products.set_index("product")["sales_price"].astype(float)
    acc = accounts.set_index("account")
    team = teams.set_index("sales_agent")
    engage = pd.to_datetime(dated["engage_date"], utc=True, format="ISO8601").astype(TS_DTYPE)
    opportunities = pd.DataFrame(
        {
            "opportunity_id": dated["opportunity_id"].to_numpy(),
            "created_at": engage.to_numpy(),
            "amount": dated["product"].map(price).to_numpy(dtype="float64"),
            "account_id": dated["account"].to_numpy(dtype=object),
            "owner_id": dated["sales_agent"].to_numpy(dtype=object),
            "team": dated["sales_agent"].map(team["manager"]).to_numpy(dtype=object),
            "region": dated["sales_agent"].map(team["regional_office"]).to_numpy(dtype=object),
            "product": dated["product"].to_numpy(dtype=object),
            "series": dated["product"].map(products.set_index("product")["series"]).to_numpy(dtype=object),
            "sector": dated["account"].map(acc["sector"]).to_numpy(dtype=object),
            "office_location": dated["account"].map(acc["office_location"]).to_numpy(dtype=object),
            "company_size": _size_band(dated["account"].map(acc["employees"])).to_numpy(dtype=object),
        }
    )
    unknown_price = opportunities["amount"].isna()
    report["deals whose product has no list price (amount 0)"] = int(unknown_price.sum())
    opportunities.loc[unknown_price, "amount"] = 0.0
    engaging = pd.DataFrame({"opportunity_id": dated["opportunity_id"], "stage": "Engaging", "entered_at": engage})
    closed = dated[dated["close_date"].notna()]
    closes = pd.DataFrame(
        {
            "opportunity_id": closed["opportunity_id"],
            "stage": closed["deal_stage"].to_numpy(),
            "entered_at": pd.to_datetime(closed["close_date"], utc=True, format="ISO8601").astype(TS_DTYPE),
        }
    )
    history = pd.concat([engaging, closes], ignore_index=True)
    report["opportunities imported"] = len(opportunities)
    report["won"] = int((closes["stage"] == "Won").sum())
    report["lost"] = int((closes["stage"] == "Lost").sum())
    return Imported(Tables(opportunities, history), STAGES, SEGMENTS, report)
