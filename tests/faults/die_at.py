"""`oppscore train` that SIGKILLs itself at one named step of train → register → export → alias.

Run by tests/faults as a subprocess: `python die_at.py STEP RESULT.pickle train --data …`.
Training is replayed from a pickled result (the kills are about what happens after it), and
the gate is forced open so that every step up to the alias is reached. "swapping" dies after the first rename of the export (the live copy moved aside, or, when an
earlier kill left it aside, the new one put in place). STEP "none" kills
nothing; "slow-gate" keeps the real gate but has it wait for the other train's gate after reading
the champion, so that two trains started together would both read it without the lock.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import time
from pathlib import Path


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _die_before(owner: object, name: str) -> None:
    setattr(owner, name, lambda *a, **k: _die())


def _die_after(owner: object, name: str, when=lambda *a, **k: True) -> None:
    real = getattr(owner, name)

    def wrapper(*args, **kwargs):
        out = real(*args, **kwargs)
        if when(*args, **kwargs):
            _die()
        return out

    setattr(owner, name, wrapper)


def main() -> None:
    step, cached, *args = sys.argv[1:]
    import mlflow.pyfunc
    from mlflow import MlflowClient

    import scoring.champion_folder
    import training.pipeline
    import training.registry
    from oppscore.cli import app

    with open(cached, "rb") as f:
        result = pickle.load(f)  # noqa: S301 - written by the test that runs this
    training.pipeline.train = lambda *a, **k: result
    real_gate = training.registry.gate
    if step == "slow-gate":
        def slow_gate(*a, **k):
            """Read the champion, then wait (up to 8 s) for the other train to reach its gate too:
            without the lock both arrive and both read the same champion; with it the other
            cannot arrive until this one has finished."""
            champion = training.registry.champion_version(a[2])
            meeting = a[2].home / "gate-meeting"
            meeting.mkdir(exist_ok=True)
            (meeting / str(os.getpid())).touch()
            deadline = time.monotonic() + 8
            while len(list(meeting.iterdir())) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            out = real_gate(*a, **k)
            print(f"gate read champion {champion}", flush=True)  # noqa: T201 - read by the test
            return out

        training.registry.gate = slow_gate
    elif step != "none":
        training.registry.gate = lambda *a, **k: (True, "forced open by the fault test", None)
    steps = {
        "none": lambda: None,
        "slow-gate": lambda: None,
        "trained": lambda: _die_before(training.registry, "log_and_register"),
        "logged": lambda: _die_before(mlflow.pyfunc, "log_model"),
        "registered": lambda: _die_after(mlflow.pyfunc, "log_model"),
        "exporting": lambda: _die_after(scoring.champion_folder, "_fsync_tree"),
        "swapping": lambda: _die_after(os, "replace", lambda src, dst: Path(dst).name in ("champion", ".champion.previous")),
        "exported": lambda: _die_before(MlflowClient, "set_registered_model_alias"),
        "aliased": lambda: _die_after(MlflowClient, "set_registered_model_alias"),
    }
    steps[step]()
    app(args=args, prog_name="oppscore")


if __name__ == "__main__":
    main()
