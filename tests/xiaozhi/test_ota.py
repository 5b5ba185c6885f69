"""OTA, activation and device tokens on the real app, with the real `parley devices` and `users` commands."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from parley import cli
from parley.providers.factory import build_vad
from parley.providers.testing import EchoChat
from parley.providers.testing_voice import FixedLatencySTT, FixedLatencyTTS
from parley.standins.server import BackgroundServer
from tests.conftest import ServerFactory, make_settings
from tests.xiaozhi.device import Device, history, ota

MAC = "aa:bb:cc:00:00:02"
CLIENT = "5b3c1f9e-0000-4000-8000-000000000002"


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "data"
    # `parley devices ...` reads its settings from the environment, as on a real machine
    monkeypatch.setenv("PARLEY_DATA_DIR", str(path))
    monkeypatch.delenv("PARLEY_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    return path


def parley(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    with ThreadPoolExecutor(1) as pool:  # the command runs its own event loop
        code = pool.submit(cli.main, list(argv)).result()
    out = capsys.readouterr()
    return code, out.out + out.err


def add_user_token(capsys: pytest.CaptureFixture[str], name: str) -> str:
    code, out = parley(capsys, "users", "add", name)
    assert code == 0, out
    return out.strip().splitlines()[-1]


def start(serve: ServerFactory, data_dir: Path, **overrides: Any) -> BackgroundServer:
    settings = make_settings(data_dir, vad="silero", **overrides)
    return serve(
        chat=EchoChat(),
        stt=FixedLatencySTT(),
        tts=FixedLatencyTTS(first_byte=0.01, secs_per_char=0.005),
        vad=build_vad(settings),
        settings=settings,
    )


async def refused(url: str, token: str, mac: str = MAC, **kwargs: Any) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as caught:
        await Device.connect(url, token, mac, **kwargs)
    return caught.value


async def test_open_mode_gives_every_device_a_url_and_a_fresh_token(
    serve: ServerFactory, data_dir: Path
) -> None:
    server = start(serve, data_dir)
    first = await ota(server.url, MAC, CLIENT)
    assert first.status_code == 200 and first.headers["content-type"] == "application/json"
    body = first.json()
    assert body["websocket"]["url"] == f"ws://127.0.0.1:{server.port}/xiaozhi/v1/"
    assert body["firmware"]["version"] == "1.6.0" and "activation" not in body
    assert body["server_time"]["timestamp"] > 0
    # without the trailing slash too; each answer's token replaces the one before
    second = await ota(server.url, MAC, CLIENT, path="/xiaozhi/ota")
    assert second.status_code == 200
    old, new = body["websocket"]["token"], second.json()["websocket"]["token"]
    assert old != new
    assert (await refused(body["websocket"]["url"], old)).response.status_code == 401
    device = await Device.connect(body["websocket"]["url"], new, MAC)
    assert device.hello["type"] == "hello"
    await device.close()


async def test_the_public_url_is_what_devices_are_told(serve: ServerFactory, data_dir: Path) -> None:
    server = start(serve, data_dir, public_url="https://parley.example.com/voice")
    body = (await ota(server.url, MAC, CLIENT)).json()
    assert body["websocket"]["url"] == "wss://parley.example.com/voice/xiaozhi/v1/"


async def test_ota_refuses_what_is_not_a_device(serve: ServerFactory, data_dir: Path) -> None:
    server = start(serve, data_dir)
    async with httpx.AsyncClient(base_url=server.url) as http:
        no_mac = await http.post("/xiaozhi/ota/", headers={"Client-Id": CLIENT}, json={})
        assert no_mac.status_code == 400 and no_mac.json()["field"] == "Device-Id"
        bad_client = await http.post(
            "/xiaozhi/ota/", headers={"Device-Id": MAC, "Client-Id": "../x"}, json={}
        )
        assert bad_client.status_code == 400 and bad_client.json()["field"] == "Client-Id"
        not_json = await http.post(
            "/xiaozhi/ota/", headers={"Device-Id": MAC, "Client-Id": CLIENT}, content=b"{"
        )
        assert not_json.status_code == 400 and not_json.json()["field"] == "body"
        huge = await http.post(
            "/xiaozhi/ota/", headers={"Device-Id": MAC, "Client-Id": CLIENT}, content=b" " * (65 * 1024)
        )
        assert huge.status_code == 413 and huge.json()["limit"] == 64 * 1024
        never_asked = await http.post(
            "/xiaozhi/ota/activate", headers={"Device-Id": MAC, "Client-Id": CLIENT}
        )
        assert never_asked.status_code == 404 and never_asked.json()["field"] == "Device-Id"
    # nothing was recorded by the refused requests
    assert parley_list(server) == []


def parley_list(server: BackgroundServer) -> list[str]:
    code, out = _list()
    assert code == 0, out
    return [line for line in out.splitlines() if line]


def _list() -> tuple[int, str]:
    import contextlib
    import io

    buffer = io.StringIO()
    with ThreadPoolExecutor(1) as pool, contextlib.redirect_stdout(buffer):
        code = pool.submit(cli.main, ["devices", "list"]).result()
    return code, buffer.getvalue()


async def test_activation_binds_a_device_to_a_user_and_removal_revokes_it(
    serve: ServerFactory, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = start(serve, data_dir, auth="token")
    code, out = parley(capsys, "users", "add", "alice")
    assert code == 0, out
    alice = out.strip().splitlines()[-1]

    first = (await ota(server.url, MAC, CLIENT)).json()
    activation = first["activation"]
    assert len(activation["code"]) == 6 and activation["code"].isdigit()
    assert first["websocket"]["token"] == ""
    # asking again shows the same code; the poll says "not yet"
    assert (await ota(server.url, MAC, CLIENT)).json()["activation"]["code"] == activation["code"]
    poll = httpx.AsyncClient(base_url=server.url, headers={"Device-Id": MAC, "Client-Id": CLIENT})
    async with poll:
        assert (
            await poll.post("/xiaozhi/ota/activate", json={"algorithm": "hmac-sha256"})
        ).status_code == 202
        assert (await refused(first["websocket"]["url"], "")).response.status_code == 401

        wrong = parley(
            capsys,
            "devices",
            "bind",
            "000000" if activation["code"] != "000000" else "111111",
            "--user",
            "alice",
        )
        assert wrong[0] == 1 and "no device waits" in wrong[1]
        assert parley(capsys, "devices", "bind", activation["code"], "--user", "nobody")[0] == 1
        code, out = parley(capsys, "devices", "bind", activation["code"], "--user", "alice")
        assert code == 0 and MAC in out, out
        assert (await poll.post("/xiaozhi/ota/activate", json={})).status_code == 200

    bound = (await ota(server.url, MAC, CLIENT)).json()
    assert "activation" not in bound and bound["websocket"]["token"].startswith("xz_")
    # the same MAC with another Client-Id is another device: it gets a code, not alice's token
    other = (await ota(server.url, MAC, "another-client")).json()
    assert "activation" in other and other["websocket"]["token"] == ""

    token = bound["websocket"]["token"]
    device = await Device.connect(bound["websocket"]["url"], token, MAC, version=3)
    await device.send({"type": "listen", "state": "detect", "text": "hello there"})
    await device.until_json("tts", "stop")
    await device.close()
    # alice's own conversation, read with her API token
    messages = await history(server.url, "xiaozhi-aabbcc000002", {"Authorization": f"Bearer {alice}"})
    assert [m["content"] for m in messages] == ["hello there", "You said: hello there"]

    assert parley(capsys, "devices", "remove", MAC)[0] == 0
    assert (await refused(bound["websocket"]["url"], token)).response.status_code == 401


async def test_a_newer_firmware_for_the_devices_board_is_offered_and_served(
    serve: ServerFactory, data_dir: Path
) -> None:
    server = start(serve, data_dir)
    images = data_dir / "firmware"
    images.mkdir(parents=True)
    for name in ("bread-compact-wifi_1.5.0.bin", "bread-compact-wifi_1.10.0.bin", "other-board_9.0.0.bin"):
        (images / name).write_bytes(name.encode() * 100)
    (images / "notes.txt").write_text("not an image")

    async def ask(board: str, version: str) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=server.url) as http:
            answer = await http.post(
                "/xiaozhi/ota/",
                headers={"Device-Id": MAC, "Client-Id": CLIENT},
                json={"board": {"type": board}, "application": {"version": version}},
            )
        assert answer.status_code == 200, answer.text
        firmware: dict[str, Any] = answer.json()["firmware"]
        return firmware

    offered = await ask("bread-compact-wifi", "1.9.2")  # 1.10.0 is newer than 1.9.2
    assert offered == {
        "version": "1.10.0",
        "url": f"{server.url}/xiaozhi/ota/download/bread-compact-wifi_1.10.0.bin",
    }
    async with httpx.AsyncClient() as http:
        image = await http.get(offered["url"])
        assert image.status_code == 200 and image.content == b"bread-compact-wifi_1.10.0.bin" * 100
        for name in ("notes.txt", "..%2Fparley.db", "missing_1.0.bin"):
            assert (await http.get(f"{server.url}/xiaozhi/ota/download/{name}")).status_code == 404
    assert await ask("bread-compact-wifi", "1.10.0") == {"version": "1.10.0", "url": ""}
    assert await ask("unknown-board", "0.1.0") == {"version": "0.1.0", "url": ""}
