"""The HTTP side of Workers AI, shared by chat and speech-to-text.

Every failure of a model call is translated here, where it enters, into Parley's exception tree,
so that the providers and everything above them see only `ParleyError`s that say what to fix.
The API token lives only in the HTTP session's default headers (providers/http.py); no message
or log line built here contains it. Cloudflare's own error text and the base URL go to the log
(redacted), not into errors, which clients see.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

from parley.errors import (
    ParleyError,
    PayloadTooLarge,
    ProviderError,
    ProviderNotConfigured,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)
from parley.providers.http import (
    UpstreamConnectError,
    UpstreamHTTP,
    UpstreamHTTPError,
    UpstreamResponse,
    UpstreamTimeout,
)
from parley.redact import redact, safe_url

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"

DAILY_QUOTA_MESSAGE = "Workers AI daily free allocation used up; quota resets at 00:00 UTC"
TOKEN_HINT = (
    "Cloudflare rejected the API token; set CLOUDFLARE_API_TOKEN to a token with the "
    "Workers AI Read and Edit permissions"
)

# Error-envelope codes from Cloudflare's Workers AI error documentation.
_CODE_QUOTA = 3036
_CODE_CAPACITY = 3040
_CODE_TIMEOUT = 3007
_CODE_TOO_LARGE = 3006
_CODES_NO_MODEL = frozenset({5007, 3042})
_CODE_LICENCE = 5016
_CODE_AUTH = 10000
# The Cloudflare API answers 7003 ("could not route ... object identifier is invalid") for an
# account id it does not know.
_CODE_BAD_ACCOUNT = 7003


def upstream_error(body: Any) -> tuple[int | None, str]:
    """The first (code, message) of a Cloudflare error envelope, tolerating odd shapes."""
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            code = errors[0].get("code")
            message = errors[0].get("message")
            return (code if isinstance(code, int) else None, str(message or ""))
        error = body.get("error")
        if isinstance(error, str):
            return None, error
        if isinstance(error, dict):
            code = error.get("code")
            return (code if isinstance(code, int) else None, str(error.get("message") or ""))
    return None, ""


def map_error(
    status: int | None, code: int | None, message: str, *, model: str, model_setting: str
) -> ParleyError:
    """Translate a Workers AI failure (HTTP status and/or envelope code) into Parley's tree.

    The envelope code is checked before the status: 5016 (licence) comes with 403, which would
    otherwise read as a bad token.
    """
    log.warning(
        "Workers AI answered %s for %s: code=%s message=%s",
        f"HTTP {status}" if status is not None else "an error event",
        model,
        code if code is not None else "-",
        redact(message) if message else "-",
    )
    details = {"upstream_status": status, "upstream_code": code}
    if code == _CODE_QUOTA:
        return ProviderRateLimited(DAILY_QUOTA_MESSAGE, details=details)
    if code == _CODE_CAPACITY:
        return ProviderRateLimited(f"Workers AI is out of capacity for {model}; retry later", details=details)
    if code == _CODE_TIMEOUT:
        return ProviderTimeout(f"Workers AI timed out running {model}", details=details)
    if code == _CODE_TOO_LARGE:
        return PayloadTooLarge(f"The request is too large for {model}", details=details)
    if code in _CODES_NO_MODEL:
        return ProviderNotConfigured(
            f"Workers AI has no model {model!r}; set {model_setting} to a model from the "
            "Workers AI catalogue",
            field=model_setting,
            details=details,
        )
    if code == _CODE_LICENCE:
        return ProviderNotConfigured(
            f"The licence of {model} has not been accepted for this Cloudflare account; accept it "
            f"or set {model_setting} to another model",
            field=model_setting,
            details=details,
        )
    if code == _CODE_AUTH or status in (401, 403):
        return ProviderNotConfigured(TOKEN_HINT, field="CLOUDFLARE_API_TOKEN", details=details)
    if code == _CODE_BAD_ACCOUNT:
        return ProviderNotConfigured(
            "Cloudflare does not know this account; set CLOUDFLARE_ACCOUNT_ID to the account id "
            "shown in the Cloudflare dashboard",
            field="CLOUDFLARE_ACCOUNT_ID",
            details=details,
        )
    if status == 429:
        return ProviderRateLimited(
            f"Workers AI is rate limiting requests for {model}; retry later", details=details
        )
    if status in (408, 504):
        return ProviderTimeout(f"Workers AI timed out running {model}", details=details)
    if status == 413:
        return PayloadTooLarge(f"The request is too large for {model}", details=details)
    if code is not None:
        return ProviderError(f"Workers AI answered {model} with error {code}", details=details)
    if status is None:
        return ProviderError(
            f"Workers AI reported an error while writing the reply of {model}", details=details
        )
    return ProviderError(f"Workers AI answered {model} with HTTP {status}", details=details)


class WorkersAIClient:
    """Runs Workers AI models over the REST API (`/accounts/{id}/ai/run/{model}`).

    Missing credentials do not stop construction, so the server can start and every call can
    say which variable to set.
    """

    def __init__(
        self,
        *,
        account_id: str | None,
        api_token: str | None,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 60.0,
    ) -> None:
        self.account_id = account_id or None
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        headers = {"Authorization": f"Bearer {api_token}"} if api_token else {}
        self._has_token = bool(api_token)
        self._http = UpstreamHTTP(self.base_url, headers=headers, timeout=timeout)

    @property
    def missing(self) -> list[str]:
        """Names of the environment variables that must still be set."""
        names = []
        if not self.account_id:
            names.append("CLOUDFLARE_ACCOUNT_ID")
        if not self._has_token:
            names.append("CLOUDFLARE_API_TOKEN")
        return names

    def _path(self, model: str) -> str:
        missing = self.missing
        if missing:
            raise ProviderNotConfigured(
                f"Workers AI needs {' and '.join(missing)}; set the account id shown in the Cloudflare "
                "dashboard and an API token with the Workers AI Read and Edit permissions",
                field=missing[0],
            )
        assert self.account_id is not None
        return f"/accounts/{quote(self.account_id, safe='')}/ai/run/{model}"

    async def run(
        self,
        model: str,
        *,
        model_setting: str,
        json: Any = None,
        content: bytes | None = None,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        """Call a model without streaming and return the envelope's `result`."""
        path = self._path(model)
        headers = {"Content-Type": content_type} if content_type else None
        try:
            response = await self._http.request("POST", path, json=json, data=content, headers=headers)
        except UpstreamHTTPError as exc:
            raise self._transport_error(exc, model) from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_error or not isinstance(body, dict) or body.get("success") is False:
            raise self._response_error(response.status_code, body, response.text, model, model_setting)
        result = body.get("result")
        if not isinstance(result, dict):
            raise ProviderError(f"Workers AI answered {model} without a result object")
        return result

    @asynccontextmanager
    async def stream(self, model: str, *, model_setting: str, json: Any) -> AsyncIterator[UpstreamResponse]:
        """Open a streamed call; leaving the block (or cancelling it) closes the connection.

        A non-2xx answer is raised as a Parley error before the block runs, and transport
        errors while the caller reads the body are translated too.
        """
        path = self._path(model)
        try:
            async with self._http.stream("POST", path, json=json) as response:
                if response.is_error:
                    await response.aread()
                    try:
                        body = response.json()
                    except ValueError:
                        body = None
                    raise self._response_error(
                        response.status_code, body, response.text, model, model_setting
                    )
                yield response
        except UpstreamHTTPError as exc:
            raise self._transport_error(exc, model) from exc

    def _response_error(
        self, status: int, body: Any, text: str, model: str, model_setting: str
    ) -> ParleyError:
        code, message = upstream_error(body)
        if not message and body is None:
            message = text[:300]
        return map_error(status, code, message, model=model, model_setting=model_setting)

    def _transport_error(self, exc: UpstreamHTTPError, model: str) -> ParleyError:
        log.warning(
            "Workers AI at %s for %s: %s: %s",
            safe_url(self.base_url),
            model,
            type(exc).__name__,
            redact(str(exc)) or "-",
        )
        if isinstance(exc, UpstreamTimeout):
            return ProviderTimeout(f"Workers AI did not answer {model} within {self.timeout:g} s")
        if isinstance(exc, UpstreamConnectError):
            return ProviderUnavailable(
                "Cannot reach Workers AI; check the network and PARLEY_WORKERS_AI_BASE_URL"
            )
        return ProviderUnavailable(f"The connection to Workers AI failed while running {model}")

    async def aclose(self) -> None:
        await self._http.aclose()
