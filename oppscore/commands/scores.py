"""Commands on scores: score and export-scores (the CRM write-back)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from engines.runner import EngineOptions
from features.errors import InputInvalid, NotEnoughData
from features.loading import table_path
from features.settings import Settings
from features.times import utc_now
from oppscore.commands.base import DEFAULT_ENGINE, AsOfOpt, ConfigOpt, DataOpt, TableOutOpt, _as_of, _settings, _where, app, engine_options
from oppscore.console import out, show_table, steps


@app.command()
@engine_options
def score(
    data: DataOpt,
    out_file: TableOutOpt,
    as_of: AsOfOpt = None,
    shadow: Annotated[str | None, typer.Option("--shadow", help="a registered version that scores beside the champion: its scores are recorded for `oppscore monitor` (default: [serving] shadow)")] = None,
    record_past_end: Annotated[bool, typer.Option("--record-past-end", help="record the run in the score history even when --as-of lies after the export's end")] = False,
    config: ConfigOpt = None,
    engine: EngineOptions = DEFAULT_ENGINE,
) -> None:
    """Score every open opportunity with the champion; highest win probability first. Each run
    is recorded in the score history with the drift it measured (`oppscore monitor`); a run as
    of a time after the export's end is not (what it says is not what the export knew), unless
    --record-past-end."""
    from engines import partitioned
    from engines.runner import runner
    from scoring.store import load_champion, load_version

    settings = _settings(config, data)
    shadow = shadow or settings.serving.shadow
    folder = out_file if not out_file.suffix else None  # a folder: one Parquet file per partition, for exports too large to gather
    if folder is None:
        table_path(out_file)  # before any work: a command that fails on its output records nothing
    now = utc_now()
    with steps("score") as step, runner(engine, progress=step) as run:
        step("loading")
        ids, span = partitioned.opportunities(run, data, settings, now)
        if span is None:
            raise NotEnoughData(f"--data {data}: no opportunity in any partition")
        loaded = load_champion(settings)
        shadow_bundle = None
        if shadow is not None and str(shadow) != str(loaded.version):
            step(f"loading shadow v{shadow}")
            shadow_bundle = load_version(settings, str(shadow))
        at = _as_of(as_of, span, now)
        past_end = at > span[1] and not record_past_end
        step("reading score history")
        history, previous = _history_for(settings, ids, at)
        step("scoring")
        done = partitioned.score(run, data, settings, now, at, loaded.bundle, out_dir=folder, previous=previous, shadow=shadow_bundle)
    show_table([{"opportunities": k, "count": v} for k, v in done.counts.items() if v], title=f"{len(ids):,} opportunities in the export, as of {at:%Y-%m-%d %H:%M} UTC{_where(data, engine)}")
    if done.unknown_stages:
        out.print(f"[yellow]not scored:[/yellow] {done.counts['in a stage the model does not know']} deals in stages champion v{loaded.version} was not trained on: {', '.join(done.unknown_stages[:10])}; retrain on this export (`oppscore train --data {data}`)")
    if done.rows == 0:
        raise NotEnoughData(f"--data {data}: no opportunity was open at {at:%Y-%m-%d %H:%M} UTC in a stage the model knows; nothing scored, {out_file} not written")
    recorded = _write_and_record(done, out_file, folder, data, None if past_end else history, now, loaded, shadow, shadow_bundle)  # past the end: not what the export knew
    _say_drift(done.drift, settings)
    if done.table is not None:
        _say_top_and_moved(done.table)
    kept = "not kept in the score history (--as-of is after the export's end; --record-past-end keeps it)" if past_end else _kept(recorded)
    out.print(f"scored {done.rows:,} open opportunities with champion v{loaded.version} (from the {loaded.source}) → {out_file}; {kept}")
    out.print(f"next: `oppscore serve --data {data}` shows them on the managers' page")


def _write_and_record(done, out_file: Path, folder: Path | None, data: Path, history, now: pd.Timestamp, loaded, shadow: str | None, shadow_bundle) -> int | None:
    """The scores written, then recorded with the drift they measured (only once written: a run
    whose file failed records nothing), and a shadow's scores beside them."""
    from engines import partitioned
    from features.loading import write_table
    from scoring.history import RunFacts

    facts = RunFacts.of(loaded.bundle, drift=done.drift)
    if done.table is not None:
        write_table(done.table.drop(columns=["factors"]).assign(as_of=done.table["as_of"].astype(str)), out_file)
        recorded = _record(history, done.table, now, loaded.version, facts)  # only once the scores are written
    else:
        from features.partitions import partitions

        recorded = _record_files(history, partitioned.outs(partitions(data), folder), now, loaded.version, facts)  # this run's files, not an older run's left in the folder
    if done.shadow is not None:
        kept = _record(history, done.shadow, now, str(shadow), RunFacts.of(shadow_bundle, role="shadow"))
        out.print(f"shadow v{shadow} scored the same {len(done.shadow):,} deals: " + (f"{kept:,} scores recorded beside the champion's" if kept is not None else "not recorded (the score history did not answer)"))
    elif shadow is not None:
        out.print(f"shadow v{shadow} is the champion: nothing scored beside it")
    return recorded


def _say_top_and_moved(table: pd.DataFrame) -> None:
    """The ten highest, and the deals whose score moved 5 points or more since the last run."""
    from scoring.explain import changes_in_words

    show_table(
        [{"opportunity": r.opportunity_id, "stage": r.stage, "win": r.win_probability, "stall": "not known" if r.stall_risk != r.stall_risk else r.stall_risk, "grade": r.grade,
          "change": "new" if r.previous_score != r.previous_score else f"{r.score_change:+.0f}", "top reason": r.top_factors[0]["sentence"] if r.top_factors else ""}
         for r in table.head(10).itertuples()],
        title=f"top 10 of {len(table):,}",
    )
    changed = table[table["score_change"].abs() >= 5].sort_values("score_change", key=abs, ascending=False)
    if len(changed):
        show_table([{"opportunity": r.opportunity_id, "score": r.score, "change": f"{r.score_change:+.0f}", "why": changes_in_words(r.why_changed)} for r in changed.head(10).itertuples()],
                   title=f"moved 5 points or more since the last run: {len(changed):,}")


def _history_for(settings: Settings, ids, at: pd.Timestamp):
    """The score history and each deal's last recorded score; no history and no previous score
    when its database does not answer: the scores are worth having without the change since
    the last run."""
    from scoring.history import PREVIOUS_COLUMNS, ScoreHistory, or_said

    def read():
        history = ScoreHistory.of(settings)
        return history, history.previous(ids, at)

    every_deal_new = pd.DataFrame(columns=PREVIOUS_COLUMNS, index=pd.Index([], dtype=object, name="opportunity_id"))
    return or_said("score history skipped", read, (None, every_deal_new))


def _kept(recorded: int | None) -> str:
    return f"{recorded:,} scores kept in the score history" if recorded is not None else "[yellow]the score history was skipped[/yellow] (its database did not answer: see the warning above)"


def _say_drift(measured: dict, settings: Settings) -> None:
    """One line when this run's pipeline drifted from the training reference or a family went
    silent: seen at the run, not only in `oppscore monitor`."""
    if not measured:
        return
    from scoring.drift import drifted as drifted_features
    from scoring.drift import silent

    feats = measured["features"]
    drifted = drifted_features(measured, settings.monitor.psi_alert)
    quiet = silent(measured, settings.monitor.silent_share)
    if quiet:
        out.print(f"[yellow]went silent:[/yellow] {', '.join(quiet[:5])} carry no values in this pipeline, where training saw them: is the feed still arriving? (`oppscore monitor`)")
    if drifted:
        shown = ", ".join(f"{c} (PSI {feats[c]['psi']:.2f})" for c in drifted[:4])
        out.print(f"[yellow]drift:[/yellow] {shown} against the training reference (`oppscore monitor`)")


def _record(history, scored: pd.DataFrame, now: pd.Timestamp, version: str, run=None) -> int | None:
    from scoring.history import or_said

    return None if history is None else or_said("score history skipped", lambda: history.record(scored, now, version, "batch", run), None)


def _record_files(history, files: list[Path], now: pd.Timestamp, version: str, run) -> int | None:
    """The scores written per partition, recorded as one run a file at a time (a folder is for
    exports too large to gather)."""
    from scoring.history import or_said

    if history is None:
        return None

    def pieces():
        for file in files:
            scored = pd.read_parquet(file, columns=["opportunity_id", "as_of", "stage", "win_probability", "stall_risk", "score", "grade", "factors"])
            scored["as_of"] = pd.to_datetime(scored["as_of"], utc=True, format="ISO8601")
            scored["factors"] = scored["factors"].map(lambda text: json.loads(text) if isinstance(text, str) else text)
            yield scored

    return or_said("score history skipped (none of this run's scores were recorded)", lambda: history.record_pieces(pieces(), now, version, "batch", run), None)


CRMS = ("salesforce", "hubspot")


@app.command("export-scores")
def export_scores(
    crm: Annotated[str, typer.Argument(help="the CRM: salesforce or hubspot")],
    scores: Annotated[Path, typer.Option("--scores", help="the scores `oppscore score --out F` wrote (.csv, .parquet or .json)")],
    out_dir: Annotated[Path, typer.Option("--out", help="folder for the upsert file and the field definitions")],
    push: Annotated[bool, typer.Option("--push", help="also write them into the CRM (Salesforce: SALESFORCE_INSTANCE_URL and SALESFORCE_ACCESS_TOKEN; HubSpot: HUBSPOT_ACCESS_TOKEN)")] = False,
    config: ConfigOpt = None,
) -> None:
    """Scores as the CRM's own upsert file with the fields' definitions, optionally pushed; the
    rows a push could not write are listed by record id and reason (and the exit code is 1)."""
    from crm import hubspot_update as hubspot
    from crm import salesforce_upsert as salesforce
    from crm.scores_file import read_scores

    if crm not in CRMS:
        raise InputInvalid(f"CRM: found {crm!r}, expected one of: {', '.join(CRMS)}")
    settings = _settings(config)
    frame = read_scores(scores)
    module = salesforce if crm == "salesforce" else hubspot
    written = module.write_files(frame, settings.crm, out_dir, scores.name)
    out.print(f"wrote {len(frame):,} scores for {crm} → {written[0]}; the fields' definitions beside it ({len(written) - 1} files)")
    if crm == "salesforce":
        project = shlex.quote(str(out_dir / "salesforce-metadata"))  # sf reads sfdx-project.json from the folder it runs in
        out.print(f"deploy the fields once: `cd {project} && sf project deploy start --source-dir force-app --target-org ORG`, "
                  f"then assign the permission set {salesforce.PERMISSION_SET} to the user who upserts")
    else:
        out.print(f"create the properties once: POST {out_dir / 'property-group.json'} to /crm/v3/properties/deals/groups and {out_dir / 'properties.json'} to /crm/v3/properties/deals/batch/create")
    if not push:
        return
    pushed = _push(crm, settings, frame, module)
    out.print(f"{crm}: {pushed.written:,} of {pushed.sent:,} records written ({pushed.reference})")
    if len(pushed.failed):
        failures = out_dir / "push-failures.csv"
        pushed.failed.to_csv(failures, index=False)
        show_table([{"record": r.record_id, "why": r.error} for r in pushed.failed.head(20).itertuples()], title=f"{len(pushed.failed):,} records not written (all in {failures})")
        raise typer.Exit(1)


def _refresh(url: str, token, client_id: str | None, secret):
    """The OAuth refresh grant, when its refresh token and client id are in the environment."""
    from crm.calls import Refresh

    if token is None or not client_id:
        return None
    return Refresh(url, token.get_secret_value(), client_id, secret.get_secret_value() if secret is not None else None)


def _push(crm: str, settings: Settings, frame: pd.DataFrame, module):
    from crm.hubspot_update import BatchUpdate
    from crm.salesforce_upsert import BulkApi

    with steps(f"push to {crm}") as step:
        if crm == "salesforce":
            if not settings.salesforce_instance_url or settings.salesforce_access_token is None:
                raise InputInvalid("--push to Salesforce needs SALESFORCE_INSTANCE_URL (https://yourorg.my.salesforce.com) and SALESFORCE_ACCESS_TOKEN in the environment "
                                   "(`sf org display --target-org ORG --json` prints both)")
            rows = module.upsert_frame(frame, settings.crm)
            refresh = _refresh(f"{settings.salesforce_instance_url.rstrip('/')}/services/oauth2/token", settings.salesforce_refresh_token,
                               settings.salesforce_client_id, settings.salesforce_client_secret)
            api = BulkApi(settings.salesforce_instance_url, settings.salesforce_access_token.get_secret_value(), settings.crm.salesforce_api_version,
                          settings.crm.poll_seconds, settings.crm.push_timeout_seconds, refresh)
        else:
            if settings.hubspot_access_token is None:
                raise InputInvalid("--push to HubSpot needs HUBSPOT_ACCESS_TOKEN in the environment (a private app's token with the crm.objects.deals.write scope)")
            rows = module.import_frame(frame, settings.crm, empty_reasons="")  # a batch update empties the property with ""
            refresh = _refresh(f"{settings.crm.hubspot_base_url.rstrip('/')}/oauth/v1/token", settings.hubspot_refresh_token,
                               settings.hubspot_client_id, settings.hubspot_client_secret)
            api = BatchUpdate(settings.crm.hubspot_base_url, settings.hubspot_access_token.get_secret_value(), refresh=refresh)
        return api.push(rows, progress=step)
