"""The `oppscore` command: thin functions over the library; exit 1 on bad input, 2 on misuse.

The commands live in `oppscore.commands`, one module per subject (exports, models, scores, the
pipeline's analytics, the service); this module puts them together under one app. "Now" is read
in a command, once, and passed down; the project's own errors (and only those) become a message
and exit code 1, in one place (`oppscore.commands.base._Commands.invoke`).
"""

from __future__ import annotations

from importlib import import_module

from oppscore.commands.base import app

SUBJECTS = ("data", "models", "scores", "analytics", "service")  # in the order `oppscore --help` lists their commands
for _subject in SUBJECTS:
    import_module(f"oppscore.commands.{_subject}")  # each registers its commands on the app

__all__ = ["app"]

if __name__ == "__main__":
    app()
