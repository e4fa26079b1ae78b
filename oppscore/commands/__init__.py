"""The command line's commands, by subject; `oppscore.cli` puts them together."""
