"""The web app's Devices API on the real app: bind by code, list, rename and remove, per user."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import ServerFactory
from tests.xiaozhi.device import Device, ota
from tests.xiaozhi.test_ota import add_user_token, refused, start
from tests.xiaozhi.test_ota import data_dir as data_dir  # the fixture

MAC = "aa:bb:cc:00:00:07"
CLIENT = "5b3c1f9e-0000-4000-8000-000000000007"


async def test_a_user_binds_renames_and_removes_their_device_and_no_one_else_can(
    serve: ServerFactory, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = start(serve, data_dir, auth="token")
    alice = {"Authorization": f"Bearer {add_user_token(capsys, 'alice')}"}
    bob = {"Authorization": f"Bearer {add_user_token(capsys, 'bob')}"}
    code = (await ota(server.url, MAC, CLIENT)).json()["activation"]["code"]
    async with httpx.AsyncClient(base_url=server.url) as client:
        for bad, field in (({"code": "12ab"}, "code"), ({"code": ""}, "code")):
            r = await client.post("/api/devices/bind", json=bad, headers=alice)
            assert (r.status_code, r.json()["field"]) == (400, field), r.text
        other = "000000" if code != "000000" else "111111"
        assert (
            await client.post("/api/devices/bind", json={"code": other}, headers=alice)
        ).status_code == 404
        assert (await client.post("/api/devices/bind", json={"code": code})).status_code == 401
        bound = await client.post("/api/devices/bind", json={"code": code}, headers=alice)
        assert bound.status_code == 200 and bound.json()["deviceId"] == MAC
        # a code works once
        assert (await client.post("/api/devices/bind", json={"code": code}, headers=bob)).status_code == 404

        token = (await ota(server.url, MAC, CLIENT)).json()["websocket"]["token"]
        device = await Device.connect(server.url.replace("http", "ws") + "/xiaozhi/v1/", token, MAC)
        listed = (await client.get("/api/devices", headers=alice)).json()["devices"]
        assert [(d["deviceId"], d["online"]) for d in listed] == [(MAC, True)]
        assert (await client.get("/api/devices", headers=bob)).json()["devices"] == []

        for method in ("PATCH", "DELETE"):  # bob cannot touch alice's device
            r = await client.request(method, f"/api/devices/{MAC}", json={"name": "mine"}, headers=bob)
            assert r.status_code == 404, r.text
        too_long = await client.patch(f"/api/devices/{MAC}", json={"name": "x" * 65}, headers=alice)
        assert (too_long.status_code, too_long.json()["field"]) == (400, "name")
        renamed = await client.patch(f"/api/devices/{MAC}", json={"name": "Kitchen"}, headers=alice)
        assert renamed.json()["name"] == "Kitchen"
        assert (await client.get("/api/devices", headers=alice)).json()["devices"][0]["name"] == "Kitchen"

        assert (await client.delete(f"/api/devices/{MAC}", headers=alice)).status_code == 200
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await device.next()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        assert (
            await refused(server.url.replace("http", "ws") + "/xiaozhi/v1/", token)
        ).response.status_code == 401
        assert (await client.get("/api/devices", headers=alice)).json()["devices"] == []
