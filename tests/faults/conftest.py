"""The API tests' app (a registered champion, key 'test-key') for the fault tests that send it requests."""

from tests.api.conftest import body, client, served_store  # noqa: F401 - fixtures shared with tests/api
