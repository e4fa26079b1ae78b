"""Fuzzing the OpenAPI schema (schemathesis): whatever a client sends, no 500 and no answer
that breaks the schema. Bounded so the suite stays fast.

Schemathesis' pytest loader (`from_fixture`) does not run under pytest 9, so each operation's
hypothesis strategy is driven here directly; the checks are schemathesis' own.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from serving.app import create_app
from tests.api.conftest import AUTH

CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]
EXAMPLES = 40


def test_no_server_error_and_answers_fit_the_schema(served_store, tmp_path) -> None:
    isolated = served_store.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'fuzz.db'}"})  # events it sends are stored here, not in the shared home
    app = create_app(isolated, start_reloader=False)
    app.state.holder.load()
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {"POST /v1/score", "GET /v1/model", "GET /readyz", "POST /v1/events", "GET /v1/opportunities/{opportunity_id}"}
    for op in operations:

        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=op.as_strategy())
        def fuzz(case) -> None:
            case.call_and_validate(headers=AUTH, checks=CHECKS)

        fuzz()
