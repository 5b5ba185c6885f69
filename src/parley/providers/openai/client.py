"""The HTTP side of OpenAI-compatible servers, shared by chat and speech-to-text.

"OpenAI-compatible" covers OpenAI itself, Groq, vLLM, llama.cpp's server, LM Studio and Ollama,
which agree on paths and bodies but not on error shapes: OpenAI nests `{"error": {"message",
"type", "code"}}`, Ollama answers `{"error": "..."}`, vLLM puts `message` at the top level. All of
them are read here and translated into Parley's exception tree where they enter. The API key is
only ever in the client's default headers.

What reaches clients says which server failed (by the setting that names it) and how; the base
URL (which may be internal, or carry credentials), the upstream's own text (which may quote the
key) and transport details go only to the log, redacted.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

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
    multipart,
)
from parley.redact import redact, safe_url, url_secrets

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"

# An upstream error code worth passing on (`invalid_api_key`, `model_not_found`): an identifier,
# not text.
_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def upstream_error(body: Any) -> tuple[str, str | None]:
    """(message, code) from any of the error shapes above; code may be a string or a number."""
    if not isinstance(body, dict):
        return "", None
    error = body.get("error")
    if isinstance(error, dict):
        code = error.get("code")
        return str(error.get("message") or ""), None if code is None else str(code)
    if isinstance(error, str):
        return error, None
    message = body.get("message") or body.get("detail")
    return (str(message) if message else ""), None


class OpenAIClient:
    """Calls one OpenAI-compatible base URL (which includes `/v1`, as in `http://127.0.0.1:11434/v1`).

    `key_setting` and `base_url_setting` name the variables that configured this client, so an
    error can say which one to change.
    """

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        timeout: float = 60.0,
        key_setting: str = "PARLEY_LLM_API_KEY",
        base_url_setting: str = "PARLEY_LLM_BASE_URL",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.key_setting = key_setting
        self.base_url_setting = base_url_setting
        #: how errors name this server to clients: by its setting, never by its address
        self.server = f"the OpenAI-compatible server ({base_url_setting})"
        self.where = self.server[0].upper() + self.server[1:]
        self._has_key = bool(api_key)
        self._secrets = [api_key, *url_secrets(base_url)]
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = UpstreamHTTP(self.base_url, headers=headers, timeout=timeout)

    async def post(
        self,
        path: str,
        *,
        model: str,
        model_setting: str,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
    ) -> dict[str, Any]:
        """POST and return the decoded JSON object of a 2xx answer."""
        body = multipart(data or {}, files or {}) if data or files else None
        try:
            response = await self._http.request("POST", path, json=json, data=body)
        except UpstreamHTTPError as exc:
            raise self.transport_error(exc, model) from exc
        if response.is_error:
            raise self.response_error(response, model, model_setting)
        try:
            body = response.json()
        except ValueError as exc:
            raise ProviderError(f"{self.where} answered {path} with something other than JSON") from exc
        if not isinstance(body, dict):
            raise ProviderError(f"{self.where} answered {path} with unexpected JSON")
        return body

    @asynccontextmanager
    async def stream(
        self, path: str, *, model: str, model_setting: str, json: Any
    ) -> AsyncIterator[UpstreamResponse]:
        """Open a streamed POST; leaving the block (or cancelling it) closes the connection."""
        try:
            async with self._http.stream("POST", path, json=json) as response:
                if response.is_error:
                    await response.aread()
                    raise self.response_error(response, model, model_setting)
                yield response
        except UpstreamHTTPError as exc:
            raise self.transport_error(exc, model) from exc

    def response_error(self, response: UpstreamResponse, model: str, model_setting: str) -> ParleyError:
        try:
            body = response.json()
        except ValueError:
            body = None
        message, code = upstream_error(body)
        if not message and body is None:
            message = response.text[:300]
        return self.map_error(response.status_code, message, code, model=model, model_setting=model_setting)

    def redacted(self, text: str) -> str:
        """`text` fit for the log: this client's key and URL credentials and secret shapes masked."""
        return redact(text, self._secrets)

    def map_error(
        self, status: int | None, message: str, code: str | None, *, model: str, model_setting: str
    ) -> ParleyError:
        """Translate an HTTP status (None for an error inside a stream) into Parley's tree.

        The upstream's message is logged (redacted) and left out of the error, which clients see.
        """
        log.warning(
            "%s (%s) answered %s for %s: code=%s message=%s",
            safe_url(self.base_url),
            self.base_url_setting,
            f"HTTP {status}" if status is not None else "an error event",
            model,
            self.redacted(str(code)) if code is not None else "-",
            self.redacted(message) if message else "-",
        )
        safe_code = code if code is not None and _CODE.fullmatch(code) else None
        details = {"upstream_status": status, "upstream_code": safe_code and self.redacted(safe_code)}
        where = self.where
        if status in (401, 403):
            hint = "rejected the API key" if self._has_key else "requires an API key"
            return ProviderNotConfigured(
                f"{where} {hint}; set {self.key_setting}", field=self.key_setting, details=details
            )
        if status == 404 or code == "model_not_found":
            return ProviderNotConfigured(
                f"{where} has no model {model!r} (or no such endpoint); set {model_setting} to a model "
                f"it serves and check that {self.base_url_setting} ends with the API prefix, e.g. /v1",
                field=model_setting,
                details=details,
            )
        if status == 429:
            if code == "insufficient_quota":
                return ProviderRateLimited(f"{where} says the account's quota is used up", details=details)
            return ProviderRateLimited(f"{where} is rate limiting requests; retry later", details=details)
        if status in (408, 504):
            return ProviderTimeout(f"{where} timed out running {model}", details=details)
        if status == 413:
            return PayloadTooLarge(f"The request is too large for {self.server}", details=details)
        if status is not None and status >= 500:
            return ProviderUnavailable(f"{where} failed running {model} (HTTP {status})", details=details)
        if status is None:
            return ProviderError(
                f"{where} reported an error while writing the reply of {model}", details=details
            )
        return ProviderError(f"{where} refused the request for {model} (HTTP {status})", details=details)

    def transport_error(self, exc: UpstreamHTTPError, model: str) -> ParleyError:
        log.warning(
            "%s (%s) for %s: %s: %s",
            safe_url(self.base_url),
            self.base_url_setting,
            model,
            type(exc).__name__,
            self.redacted(str(exc)) or "-",
        )
        if isinstance(exc, UpstreamTimeout):
            return ProviderTimeout(f"{self.where} did not answer {model} within {self.timeout:g} s")
        if isinstance(exc, UpstreamConnectError):
            return ProviderUnavailable(
                f"Cannot reach {self.server}; is it running, and is {self.base_url_setting} right?"
            )
        return ProviderUnavailable(f"The connection to {self.server} failed while running {model}")

    async def aclose(self) -> None:
        await self._http.aclose()
