"""What authentication adds per request: each PARLEY_AUTH mode against `none`, in one run.

    .venv/bin/python bench/auth.py [--rounds 200]

One Parley server per mode (real uvicorn in a thread, the EchoChat model, SQLite), all in this
process: `none`, `token` (bearer token: a digest lookup), `token` by sign-in cookie, and
`cloudflare-access` (an RS256 JWT verified against a cached key from a local Access key server).
Rounds go round-robin over the modes, so drift on this noisy machine hits them alike. Measured from
the client: a streamed turn (request -> first `chunk` event) and GET /api/history. Prints markdown;
the goal is under 5% on a streamed turn.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, percentile, table
from parley.app import create_app
from parley.auth.tokens import issue
from parley.config import Settings
from parley.providers.testing import EchoChat
from parley.standins.access import AccessIssuer
from parley.standins.server import BackgroundServer, free_port
from parley.store.sqlite import SQLiteStore
from parley.store.users import CredentialKind


def settings(data: Path, **kw: Any) -> Settings:
    base: dict[str, Any] = {
        "data_dir": data,
        "llm": "none",
        "stt": "none",
        "log_level": "WARNING",
        "warm_up": False,
        "rate_chat": "1000000/minute",
        "model_base_url": "http://127.0.0.1:9",
    }
    return Settings(_env_file=None, **(base | kw))  # type: ignore[call-arg]


async def make_token(data: Path) -> str:
    store = SQLiteStore(data / "parley.db")
    await store.open()
    try:
        user = await store.add_user("bench")
        return await issue(store, user, CredentialKind.API)
    finally:
        await store.aclose()


async def turn(client: httpx.AsyncClient, headers: dict[str, str], i: int) -> float:
    start = time.perf_counter()
    body = {"sessionId": f"b{i % 50}", "message": "hello there", "stream": True}
    async with client.stream("POST", "/api/chat", json=body, headers=headers) as r:
        assert r.status_code == 200, r.status_code
        first = None
        async for line in r.aiter_lines():
            if first is None and line.startswith("event: chunk"):
                first = time.perf_counter()
        assert first is not None
    return (first - start) * 1000


async def history(client: httpx.AsyncClient, headers: dict[str, str]) -> float:
    start = time.perf_counter()
    r = await client.get("/api/history?sessionId=b1&limit=10", headers=headers)
    assert r.status_code == 200, r.status_code
    return (time.perf_counter() - start) * 1000


async def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        port = free_port()
        access = AccessIssuer(team_domain=f"http://127.0.0.1:{port}", audience="bench")
        certs = BackgroundServer(access.app, port=port).start()
        for name in ("none", "token"):
            (root / name).mkdir()
        token = await make_token(root / "token")
        apps = {
            "none": create_app(settings(root / "none"), chat=EchoChat()),
            "token": create_app(settings(root / "token", auth="token"), chat=EchoChat()),
            "access": create_app(
                settings(
                    root / "access",
                    auth="cloudflare-access",
                    access_team_domain=access.team_domain,
                    access_aud="bench",
                ),
                chat=EchoChat(),
            ),
        }
        servers = {name: BackgroundServer(app).start() for name, app in apps.items()}
        clients = {name: httpx.AsyncClient(base_url=s.url) for name, s in servers.items()}
        try:
            cookie = await clients["token"].post(
                "/api/auth/signin", json={"token": token}, headers={"Origin": servers["token"].url}
            )
            cookie_client = httpx.AsyncClient(base_url=servers["token"].url, cookies=cookie.cookies)
            jwt = access.sign(access.claims(email="bench@example.com"))
            cases = {
                "none": (clients["none"], {}),
                "token (bearer)": (clients["token"], {"Authorization": f"Bearer {token}"}),
                "token (cookie)": (cookie_client, {"Origin": servers["token"].url}),
                "cloudflare-access (JWT)": (clients["access"], {"Cf-Access-Jwt-Assertion": jwt}),
            }
            turns: dict[str, list[float]] = {name: [] for name in cases}
            reads: dict[str, list[float]] = {name: [] for name in cases}
            for i in range(-20, rounds):  # 20 rounds of warm-up
                for name, (client, headers) in cases.items():
                    t, h = await turn(client, headers, i), await history(client, headers)
                    if i >= 0:
                        turns[name].append(t)
                        reads[name].append(h)
            base_t = percentile(sorted(turns["none"]), 50)
            base_h = percentile(sorted(reads["none"]), 50)
            rows = []
            for name in cases:
                t50 = percentile(sorted(turns[name]), 50)
                h50 = percentile(sorted(reads[name]), 50)
                rows.append(
                    [name, f"{t50:.2f}", f"{t50 / base_t:.2f}x", f"{h50:.2f}", f"{h50 / base_h:.2f}x"]
                )
            print("\n".join(machine()))
            print(f"\n{rounds} rounds, each mode once per round (p50, ms, from the client)\n")
            print(
                table(
                    ["mode", "streamed turn: first chunk", "vs none", "GET /api/history", "vs none"],
                    rows,
                )
            )
            await cookie_client.aclose()
        finally:
            for client in clients.values():
                await client.aclose()
            for server in servers.values():
                server.stop()
            certs.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    asyncio.run(main(parser.parse_args().rounds))
