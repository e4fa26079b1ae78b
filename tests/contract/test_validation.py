"""The export contract: every error names table, line, column, the value found and what was expected."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from features.contract import ExportInvalid, load_export
from features.settings import load_settings
from features.times import utc_now
from oppscore.cli import app

runner = CliRunner()


def _problems(folder: Path) -> list[str]:
    with pytest.raises(ExportInvalid) as err:
        load_export(folder, load_settings(folder / "oppscore.toml"), utc_now())
    return [str(p) for p in err.value.problems]


def _edit(folder: Path, table: str, fn) -> None:
    path = folder / f"{table}.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    fn(frame)
    frame.to_csv(path, index=False)


def test_valid_export_passes(export_dir: Path) -> None:
    validated = load_export(export_dir, load_settings(export_dir / "oppscore.toml"), utc_now())
    assert len(validated.tables.opportunities) == 300
    assert validated.notes == []


def test_missing_required_column(export_dir: Path) -> None:
    _edit(export_dir, "opportunities", lambda f: f.drop(columns=["amount"], inplace=True))
    assert _problems(export_dir) == ["opportunities.csv, column amount: found no such column, expected a column named 'amount' (required)"]


def test_unparseable_timestamp_names_line_and_value(export_dir: Path) -> None:
    def bad(f):
        f.loc[3, "entered_at"] = "31/02/2025"

    _edit(export_dir, "stage_history", bad)
    assert _problems(export_dir) == ["stage_history.csv line 5, column entered_at: found '31/02/2025', expected an ISO 8601 timestamp"]


def test_future_timestamp(export_dir: Path) -> None:
    def bad(f):
        f.loc[0, "occurred_at"] = "2999-01-01T00:00:00Z"

    _edit(export_dir, "activities", bad)
    [problem] = _problems(export_dir)
    assert problem.startswith("activities.csv line 2, column occurred_at: found '2999-01-01 00:00:00+00:00', expected a time not after now")


def test_duplicate_opportunity_id(export_dir: Path) -> None:
    def dup(f):
        f.loc[5, "opportunity_id"] = f.loc[4, "opportunity_id"]

    _edit(export_dir, "opportunities", dup)
    problems = _problems(export_dir)
    assert "opportunities.csv line 7, column opportunity_id: found 'OPP-0000004', expected a unique opportunity_id (this one appears on an earlier row)" in problems


@pytest.mark.parametrize(("value", "shown"), [("-5", "-5.0"), ("lots", "'lots'")])
def test_bad_amount(export_dir: Path, value: str, shown: str) -> None:
    def bad(f):
        f.loc[2, "amount"] = value

    _edit(export_dir, "opportunities", bad)
    assert _problems(export_dir) == [f"opportunities.csv line 4, column amount: found {shown if shown.startswith(chr(39)) else repr(shown)}, expected a number ≥ 0"]


def test_unknown_stage(export_dir: Path) -> None:
    def bad(f):
        f.loc[1, "stage"] = "Demo Booked"

    _edit(export_dir, "stage_history", bad)
    [problem] = _problems(export_dir)
    assert problem.startswith("stage_history.csv line 3, column stage: found 'Demo Booked', expected a stage named in the config (Prospecting, ")


def test_history_for_unknown_opportunity(export_dir: Path) -> None:
    def bad(f):
        f.loc[0, "opportunity_id"] = "NOPE-1"

    _edit(export_dir, "stage_history", bad)
    problems = _problems(export_dir)
    assert "stage_history.csv line 2, column opportunity_id: found 'NOPE-1', expected an opportunity_id listed in opportunities" in problems


def test_stage_entered_before_created(export_dir: Path) -> None:
    def bad(f):
        f.loc[0, "entered_at"] = "2000-01-01T00:00:00Z"

    _edit(export_dir, "stage_history", bad)
    [problem] = _problems(export_dir)
    assert problem.startswith("stage_history.csv line 2, column entered_at: found '2000-01-01 00:00:00+00:00', expected a time at or after the opportunity's created_at")


def test_empty_table(export_dir: Path) -> None:
    _edit(export_dir, "opportunities", lambda f: f.drop(f.index, inplace=True))
    assert "opportunities.csv: found no rows, expected at least one row" in _problems(export_dir)


def test_missing_file(export_dir: Path) -> None:
    (export_dir / "stage_history.csv").unlink()
    assert "stage_history: found no file, expected stage_history.csv or stage_history.parquet in the export folder" in _problems(export_dir)


def test_every_problem_is_listed_at_once(export_dir: Path) -> None:
    def bad(f):
        f.loc[1, "amount"] = "-1"
        f.loc[2, "created_at"] = "yesterday"

    _edit(export_dir, "opportunities", bad)
    assert len(_problems(export_dir)) == 2


def test_naive_and_aware_timestamps_agree(export_dir: Path) -> None:
    def naive(f):
        f["created_at"] = f["created_at"].str.replace("Z", "", regex=False)

    def offset(f):
        stamp = pd.to_datetime(f["entered_at"], utc=True).dt.tz_convert("Asia/Shanghai")
        f["entered_at"] = stamp.map(lambda t: t.isoformat())

    before = load_export(export_dir, load_settings(export_dir / "oppscore.toml"), utc_now()).tables
    _edit(export_dir, "opportunities", naive)
    _edit(export_dir, "stage_history", offset)
    after = load_export(export_dir, load_settings(export_dir / "oppscore.toml"), utc_now()).tables
    pd.testing.assert_series_equal(before.opportunities["created_at"], after.opportunities["created_at"])
    pd.testing.assert_series_equal(before.stage_history["entered_at"], after.stage_history["entered_at"])


def test_parquet_export_is_read_the_same_as_csv(small, tmp_path: Path) -> None:
    """Every table, every column, every value: the same canonical tables from either format."""
    from features.loading import write_export
    from features.settings import settings_toml
    from features.tables import TABLE_NAMES

    now = utc_now()
    read = {}
    for fmt in ("csv", "parquet"):
        folder = tmp_path / fmt
        write_export(small.tables, folder, fmt=fmt)
        (folder / "oppscore.toml").write_text(settings_toml(small.stages, small.segments))
        read[fmt] = load_export(folder, load_settings(folder / "oppscore.toml"), now).tables
    for name in TABLE_NAMES:
        csv, parquet = read["csv"].frame(name), read["parquet"].frame(name)
        assert len(csv) == len(small.tables.frame(name)) > 0
        pd.testing.assert_frame_equal(parquet[csv.columns], csv, check_dtype=False)


def test_without_config_the_order_is_inferred_and_said(export_dir: Path, tmp_path: Path, monkeypatch) -> None:
    (export_dir / "oppscore.toml").unlink()
    monkeypatch.chdir(tmp_path)
    validated = load_export(export_dir, load_settings(None), utc_now())
    assert validated.stages.open == ["Prospecting", "Qualification", "Needs Analysis", "Proposal", "Negotiation"]
    assert validated.stages.config.won == "Closed Won"
    assert "inferred the stage order" in validated.notes[0]


def test_cli_exit_codes(export_dir: Path) -> None:
    ok = runner.invoke(app, ["validate", "--data", str(export_dir)])
    assert ok.exit_code == 0, ok.output
    _edit(export_dir, "opportunities", lambda f: f.loc.__setitem__((0, "amount"), "-3"))
    bad = runner.invoke(app, ["validate", "--data", str(export_dir)])
    assert bad.exit_code == 1
    assert "line 2, column amount" in bad.output.replace("\n", " ")
    assert "Traceback" not in bad.output
    misuse = runner.invoke(app, ["validate"])
    assert misuse.exit_code == 2


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[segment]\ncolumns = ["industry"]\n', "unknown key 'segment'"),
        ("[stall]\nhorizon_dayz = 14\n", "unknown key 'stall.horizon_dayz'"),
        ("[stall]\nhorizon_days = 0\n", "key 'stall.horizon_days'"),
    ],
)
def test_config_typos_are_errors_naming_the_key_and_the_file(tmp_path: Path, text: str, named: str) -> None:
    from features.errors import ConfigInvalid

    cfg = tmp_path / "oppscore.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigInvalid) as caught:
        load_settings(cfg)
    assert str(caught.value).startswith(f"{cfg}: {named}")


def test_written_config_reads_back_whatever_the_stage_names(tmp_path: Path) -> None:
    """Quotes, backslashes and non-Latin names survive the TOML writer."""
    from features.settings import StageConfig, settings_toml

    stages = StageConfig(open=['Say "yes"', "C:\\path", "方案设计"], won="Won ✓", lost="Lost", configured_weights=[0.1, 0.5, 0.9])
    cfg = tmp_path / "oppscore.toml"
    cfg.write_text(settings_toml(stages, ["région"], horizon_days=21, header="made by a test\nsecond line"), encoding="utf-8")
    settings = load_settings(cfg)
    assert settings.stages == stages and settings.segments.columns == ["région"] and settings.stall.horizon_days == 21
    assert cfg.read_text(encoding="utf-8").startswith("# made by a test\n# second line\n")


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    cfg = tmp_path / "oppscore.toml"
    cfg.write_text('[stages]\nopen = ["A", "B"]\nwon = "W"\nlost = "L"\nconfigured_weights = [0.5]\n')
    with pytest.raises(ValueError, match="configured_weights has 1 values, expected one per open stage"):
        load_settings(cfg)


def test_a_segments_column_no_table_has_is_an_error_naming_it_and_the_columns_there_are(export_dir: Path) -> None:
    config = export_dir / "oppscore.toml"
    config.write_text(config.read_text().replace('columns = [', 'columns = [\n    "main_competitors",', 1))
    done = runner.invoke(app, ["validate", "--data", str(export_dir)])
    said = "".join(done.output.split())  # a long path wraps anywhere
    assert done.exit_code == 1 and f"{config}[segments],columncolumns:found'main_competitors'" in said
    assert "expectedacolumnoftheopportunitiestable:oneof" in said and "industry" in said
