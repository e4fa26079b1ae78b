"""What pushing to a CRM shares: one HTTP client, its failures as the project's errors (the
command exits 1 with what the CRM said), and the outcome of a push row by row."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import pandas as pd

from features.errors import OppscoreError

TIMEOUT = httpx.Timeout(60.0, connect=10.0)


class CrmRefused(OppscoreError):
    """The CRM answered, and refused (an expired token, a field it does not know)."""


class CrmUnavailable(OppscoreError):
    """The CRM could not be reached, or did not finish in time."""


@dataclass
class Pushed:
    """A push's outcome: rows the CRM took, and every row it did not, by record id and reason
    (nothing is dropped silently)."""

    sent: int
    written: int
    failed: pd.DataFrame  # record_id, error
    reference: str = ""  # the CRM's job id(s), to look the push up there


def client(base_url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=base_url.rstrip("/"), headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT)


def unreachable(crm: str, url: str, exc: Exception) -> CrmUnavailable:
    return CrmUnavailable(f"{crm} at {url} did not answer ({type(exc).__name__}: {exc}); check the address and the network, then run again")


def answered(response: httpx.Response) -> str:
    """The CRM's own words for a failed call: Salesforce's errorCode and message, HubSpot's
    category and message, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, list) and body and isinstance(body[0], dict):
        body = body[0]
    if isinstance(body, dict):
        code = body.get("errorCode") or body.get("category") or body.get("error") or ""
        message = body.get("message") or body.get("error_description") or ""
        return f"{code}: {message}".strip(": ") or str(body)[:300]
    return str(body)[:300]


@dataclass(frozen=True)
class Refresh:
    """An OAuth refresh-token grant (RFC 6749 §6), to get a new access token when the CRM says
    the current one expired: what keeps a nightly push working past the token's lifetime."""

    token_url: str
    refresh_token: str
    client_id: str
    client_secret: str | None = None

    def __call__(self, crm: str) -> str:
        form = {"grant_type": "refresh_token", "refresh_token": self.refresh_token, "client_id": self.client_id}
        if self.client_secret:
            form["client_secret"] = self.client_secret
        try:
            response = httpx.post(self.token_url, data=form, timeout=TIMEOUT)
        except httpx.HTTPError as exc:
            raise unreachable(crm, self.token_url, exc) from None
        if response.status_code != 200 or "access_token" not in response.text:
            raise CrmRefused(f"{crm} refused to refresh the access token ({response.status_code}: {answered(response)}): check the refresh token and the client id and secret")
        return response.json()["access_token"]


def renewed(http: httpx.Client, refresh: Refresh | None, crm: str, progress) -> bool:
    """After a 401: a new access token on the client, when a refresh grant is configured."""
    if refresh is None:
        return False
    http.headers["Authorization"] = f"Bearer {refresh(crm)}"
    progress(f"{crm}: the access token had expired; refreshed it")
    return True
