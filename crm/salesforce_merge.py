"""A newer Salesforce export merged into a folder imported before (`import salesforce --into`).

The objects kept in the folder (`.source/salesforce/`) with the newer rows laid over by record
id (deleted rows honoured), converted again as a full import of the merged objects would be,
and the folder's tables replaced only once the new ones are written whole; its own
oppscore.toml is kept, and stages that changed are proposed beside it.
"""

from __future__ import annotations

import shutil
import tomllib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from crm.salesforce_import import commit_source, import_objects, load_source, merge, read_objects, stage_source
from features.loading import find_table, write_export
from features.settings import StageConfig, project_name, settings_toml
from features.tables import TABLE_NAMES


@dataclass(frozen=True)
class Merged:
    changes: dict[str, dict[str, int]]  # per object: new, changed, deleted, … rows
    before: dict[str, int]  # rows per table before
    after: dict[str, int]  # and after
    proposed: Path | None  # oppscore.imported.toml, when the stages changed


def merge_into(src: Path, into: Path, progress: Callable[[str], None] = lambda _m: None) -> Merged:
    with ThreadPoolExecutor(1) as background:
        progress("reading what was imported before")
        older, kept = load_source(into)
        options, before = kept["options"], kept.get("rows", {})
        progress(f"reading {src}")
        newer = read_objects(src, delta=True)
        progress("merging")
        merged, changes = merge(older, newer)
        staged = background.submit(stage_source, merged, into, options)  # Parquet written by Arrow beside the conversion (two cores)
        progress("converting")
        try:
            imported = import_objects(merged, f"{into} (merged with {src})", **options)
        except BaseException:
            shutil.rmtree(staged.result(), ignore_errors=True)
            raise
        progress("writing")
        _replace_tables(imported.tables, into)
        commit_source(staged.result(), imported.tables)
    after = {name: len(imported.tables.frame(name)) for name in TABLE_NAMES}
    return Merged(changes, before, after, _keep_config(imported, into))


def _replace_tables(tables, into: Path) -> None:
    """Written whole beside the old ones first, then moved over them, table by table."""
    fresh = into / ".into.new"
    if fresh.exists():
        shutil.rmtree(fresh)
    write_export(tables, fresh)
    for name in TABLE_NAMES:
        stale = find_table(into, name)
        made = find_table(fresh, name)
        if made is not None:
            made.replace(into / made.name)
        if stale is not None and (made is None or stale.name != made.name):
            stale.unlink()
    shutil.rmtree(fresh)


def _keep_config(imported, into: Path) -> Path | None:
    """The folder's oppscore.toml is the user's: written when there is none, else kept, with the
    stages as imported now proposed beside it when they changed."""
    config_path = into / "oppscore.toml"
    proposed = settings_toml(imported.stages, imported.segments, header=imported.header, project=project_name(into))
    if not config_path.exists():
        config_path.write_text(proposed, encoding="utf-8")
        return None
    try:
        kept = tomllib.loads(config_path.read_text(encoding="utf-8")).get("stages")
        same = kept is not None and StageConfig(**kept).model_dump() == imported.stages.model_dump()
    except (tomllib.TOMLDecodeError, ValueError):  # a config the user broke: the tables are merged, its stages cannot be compared
        same = False
    if same:
        return None
    (into / "oppscore.imported.toml").write_text(proposed, encoding="utf-8")
    return into / "oppscore.imported.toml"
