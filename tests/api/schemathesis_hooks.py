"""Schemathesis hooks for the API's contract run (SCHEMATHESIS_HOOKS=tests.api.schemathesis_hooks).

JSON Schema cannot say that a stage entry comes after its deal's creation, that an activity is
at most a year before it, that two deals of one batch have two ids, or that a forecast's period
ends after as_of: these are the contract's rules across fields, answered 422 with problems of
type "contract" (each naming the field). Positive data that breaks only such a rule may be
refused; anything else a schema-valid request is refused for still fails the run, as
schemathesis' own positive_data_acceptance check has it."""

from __future__ import annotations

import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance


@schemathesis.check
def positive_data_accepted_but_for_rules_across_fields(ctx, response, case):
    if response.status_code == 422 and case.meta is not None and case.meta.generation.mode.is_positive:
        try:
            problems = response.json().get("detail")
        except ValueError:
            problems = None
        if isinstance(problems, list) and problems and all(isinstance(p, dict) and p.get("type") == "contract" for p in problems):
            return None
    return positive_data_acceptance(ctx, response, case)
