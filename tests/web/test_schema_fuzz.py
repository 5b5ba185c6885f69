"""Schemathesis against Parley's own /openapi.json on a real server: every answer is documented.

It runs with PARLEY_AUTH=none, and with PARLEY_AUTH=token and a valid bearer token (a user made by
`parley users add`). Each operation gets a bounded, derandomized run of valid requests and one of
invalid ones (wrong types, missing fields, bodies the schema forbids). An answer fails when it is a 5xx, carries a
status or a content type the schema does not list for that operation, or does not match the body
schema documented for its status. So a route that can answer 400 or 415 must say so in `responses=`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ServerFactory, make_settings, require_package

require_package("schemathesis", "fuzzes the REST API against its OpenAPI schema")

import schemathesis  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import CheckContext, not_a_server_error  # noqa: E402
from schemathesis.core.failures import FailureGroup  # noqa: E402
from schemathesis.core.result import Ok  # noqa: E402
from schemathesis.core.transport import Response  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from parley import cli  # noqa: E402
from parley.providers.testing import EchoChat  # noqa: E402
from parley.providers.testing_voice import FixedLatencySTT, FixedLatencyTTS  # noqa: E402

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
#: the one route that answers 401 to a signed-in client: it checks the token in its body
SIGNIN_PATH = "/api/auth/signin"
#: cases per operation and mode: the run is bounded by count, not by time
EXAMPLES = 25


def signed_in(ctx: CheckContext, response: Response, case: schemathesis.Case) -> bool | None:
    """The bearer token got every case past authentication (401 is documented, so the
    conformance checks alone would pass a run whose token never worked)."""
    if response.status_code == 401 and case.operation.path != SIGNIN_PATH:
        raise AssertionError(f"{case.operation.label} answered 401 to a valid bearer token")
    return None


def run_operation(
    operation: schemathesis.APIOperation, mode: GenerationMode, headers: dict[str, str]
) -> bool:
    """Send the cases (with `headers`); False when the schema admits every request, so there is
    no invalid one."""

    # derandomize: a seed fixed by the test function instead of chance, so every run sends the
    # same requests and a failure reproduces. No deadline: a slow answer on a shared CI core is
    # not what this test is about. No example database: nothing is kept between runs.
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(mode))
    def check(case: schemathesis.Case) -> None:
        checks = [*CHECKS, signed_in] if "Authorization" in headers else CHECKS
        case.call_and_validate(headers=headers, checks=checks)

    try:
        check()
    except Unsatisfiable:
        if mode is GenerationMode.NEGATIVE:
            return False
        raise
    return True


def token_for(data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> str:
    """A user made by the real `parley users add`; its API token (the last line it prints)."""
    monkeypatch.setenv("PARLEY_DATA_DIR", str(data_dir))
    monkeypatch.delenv("PARLEY_DATABASE_URL", raising=False)
    monkeypatch.setenv("PARLEY_AUTH", "token")
    capsys.readouterr()
    assert cli.main(["users", "add", "fuzzer"]) == 0
    return capsys.readouterr().out.strip().splitlines()[-1]


@pytest.mark.parametrize("auth", ["none", "token"])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_every_answer_conforms_to_the_schema(
    serve: ServerFactory,
    tmp_path: Path,
    mode: GenerationMode,
    auth: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data_dir = tmp_path / "data"
    headers: dict[str, str] = {}
    overrides: dict[str, str] = {}
    if auth == "token":
        # PARLEY_AUTH=token with a valid bearer token: the routes past authentication, as a
        # signed-in client sees them. The rates are lifted so every case gets past them too (a
        # 429 is documented, but would stand in for the route's own answer).
        monkeypatch.chdir(tmp_path)  # no .env of the checkout for `parley users add`
        headers = {"Authorization": f"Bearer {token_for(data_dir, capsys, monkeypatch)}"}
        overrides = {
            f"rate_{what}": "100000/minute" for what in ("chat", "transcribe", "speak", "calls", "ice")
        }
    # Real providers with trivial models and no waiting: chat echoes (whole turns, stored and
    # streamed), speech is a short tone, a recording becomes "hello". A provider that is switched
    # off would answer 503, which not_a_server_error counts as a failure however documented.
    server = serve(
        chat=EchoChat(),
        stt=FixedLatencySTT(delay=0),
        tts=FixedLatencyTTS(first_byte=0, secs_per_char=0.001),
        settings=make_settings(data_dir, auth=auth, **overrides),
    )
    # server.url is http://127.0.0.1:<port>, a host on the server's Host allow-list
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", headers=headers)
    operations = [result.ok() for result in schema.get_all_operations() if isinstance(result, Ok)]
    assert len(operations) >= 17, "the schema lost operations"
    failures: list[str] = []
    fuzzed = []
    for operation in operations:
        try:
            if run_operation(operation, mode, headers):
                fuzzed.append(operation.label)
        # every operation's failures are reported, not only the first one's (a FailureGroup is a
        # BaseExceptionGroup, so `except Exception` alone would let it through)
        except (Exception, FailureGroup) as exc:
            failures.append(
                f"{operation.label}:\n{exc}\n" + "\n".join(map(str, getattr(exc, "exceptions", ())))
            )
    assert not failures, "\n\n".join(failures)
    if mode is GenerationMode.NEGATIVE:
        # the routes that read their bodies themselves document them, so they get invalid ones too
        assert {"POST /api/offer", "POST /api/hangup", "POST /api/sfu/calls", "POST /api/transcribe"} <= set(
            fuzzed
        )
