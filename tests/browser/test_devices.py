"""The web app's Devices page in a real chromium against a real Parley (PARLEY_AUTH=token).

A real device registers through the real OTA endpoint and shows a 6-digit code; the signed-in user
types it into the page, sees the device listed (online once it connects), renames it in place,
follows its conversation, and removes it after a confirmation. A wrong code shows the API's own
message. At desktop and phone sizes, each state saved as a screenshot and checked not to be blank.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from playwright.async_api import BrowserContext, Page, expect

from parley.standins.server import BackgroundServer
from tests.browser.test_conversations import sidebar, snap
from tests.browser.test_conversations import sized as sized  # the fixture
from tests.browser.test_signin import expect_signed_in, sign_in, tab
from tests.conftest import ServerFactory
from tests.xiaozhi.device import Device, ota
from tests.xiaozhi.test_ota import add_user_token, start
from tests.xiaozhi.test_ota import data_dir as data_dir  # the fixture

pytestmark = pytest.mark.browser

MAC = "aa:bb:cc:00:00:31"
CLIENT = "5b3c1f9e-0000-4000-8000-000000000031"
SESSION = "xiaozhi-aabbcc000031"


@pytest.fixture
def server(serve: ServerFactory, data_dir: Path) -> BackgroundServer:
    return start(serve, data_dir, auth="token")


async def signed_in(context: BrowserContext, server: BackgroundServer, token: str) -> Page:
    page = await tab(context, server.url)
    await sign_in(page, token)
    await expect_signed_in(page, "alice")
    return page


async def open_devices(page: Page) -> None:
    await (await sidebar(page)).get_by_test_id("devices-link").click()
    await expect(page).to_have_url(re.compile(r"/devices$"))
    await expect(page.get_by_test_id("devices-page")).to_be_visible()
    await expect(page.get_by_test_id("input")).to_be_hidden()
    await expect(page).to_have_title("Devices · Parley")


async def listed_ids(page: Page) -> list[str]:
    response = await page.request.get(f"{page.url.rsplit('/', 1)[0]}/api/devices")
    assert response.ok
    return [d["deviceId"] for d in (await response.json())["devices"]]


async def test_bind_rename_follow_and_remove_a_device(
    server: BackgroundServer, sized: BrowserContext, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = await signed_in(sized, server, add_user_token(capsys, "alice"))
    await open_devices(page)
    await expect(page.get_by_test_id("devices-title")).to_be_focused()
    await expect(page.get_by_test_id("devices-empty")).to_be_visible()
    shots = [await snap(page, tmp_path, "no-devices")]

    # the device boots, asks the OTA endpoint, and shows its code
    activation = (await ota(server.url, MAC, CLIENT)).json()["activation"]
    code = activation["code"]
    field = page.get_by_test_id("device-code")
    error = page.get_by_test_id("device-bind-error")

    # codes the API refuses: its own message under the field, nothing bound
    await field.fill("12ab")
    await page.get_by_test_id("device-bind-submit").click()
    await expect(error).to_have_text("an activation code is 6 digits")
    await expect(field).to_have_attribute("aria-invalid", "true")
    await expect(field).to_be_focused()
    wrong = "000000" if code != "000000" else "111111"
    await field.fill(wrong)
    await field.press("Enter")
    await expect(error).to_have_text(f"no device waits for the activation code '{wrong}'")
    shots.append(await snap(page, tmp_path, "wrong-code"))
    assert await listed_ids(page) == []

    await field.fill(code)
    await field.press("Enter")
    device = page.get_by_test_id("device")
    await expect(device).to_have_count(1)
    await expect(device.get_by_test_id("device-mac")).to_have_text(MAC)
    await expect(device.get_by_test_id("device-online")).to_have_text("Offline")
    await expect(error).to_be_hidden()
    await expect(field).not_to_have_attribute("aria-invalid", "true")
    await expect(field).to_have_value("")
    await expect(page.get_by_test_id("devices-empty")).to_be_hidden()
    assert await listed_ids(page) == [MAC]
    # the device's poll learns it is bound, and it connects with its token
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Device-Id": MAC, "Client-Id": CLIENT}
    ) as poll:
        assert (await poll.post("/xiaozhi/ota/activate", json={})).status_code == 200
    ota_answer = (await ota(server.url, MAC, CLIENT)).json()["websocket"]
    connected = await Device.connect(ota_answer["url"], ota_answer["token"], MAC)
    try:
        # a reload of /devices opens the page again, now with the device online
        await page.reload()
        await expect(page.get_by_test_id("devices-page")).to_be_visible()
        await expect(device.get_by_test_id("device-online")).to_have_text("Online")
        shots.append(await snap(page, tmp_path, "bound"))

        # rename in place: an empty name is the API's error, Escape gives up, Enter saves
        await device.get_by_test_id("device-rename").click()
        name = page.get_by_test_id("device-name-input")
        await expect(name).to_be_focused()
        await name.fill("")
        await name.press("Enter")
        await expect(device.get_by_test_id("device-error")).to_have_text("name must be 1-64 characters")
        shots.append(await snap(page, tmp_path, "renaming"))
        await name.press("Escape")
        await expect(name).to_have_count(0)
        await expect(device.get_by_test_id("device-rename")).to_be_focused()
        await device.get_by_test_id("device-rename").click()
        await name.fill("Kitchen")
        await name.press("Enter")
        await expect(device.get_by_test_id("device-name")).to_have_text("Kitchen")
        await expect(device.get_by_test_id("device-rename")).to_be_focused()
        await expect(device.get_by_test_id("device-error")).to_be_hidden()
        response = await page.request.get(f"{server.url}/api/devices")
        assert [d["name"] for d in (await response.json())["devices"]] == ["Kitchen"]
        shots.append(await snap(page, tmp_path, "renamed"))

        # the device's conversation, and back
        link = device.get_by_test_id("device-conversation")
        await expect(link).to_have_attribute("href", re.compile(f"/c/{SESSION}$"))
        await link.click()
        await expect(page).to_have_url(re.compile(f"/c/{SESSION}$"))
        await expect(page.get_by_test_id("devices-page")).to_be_hidden()
        await expect(page.get_by_test_id("input")).to_be_visible()
        await expect(page.get_by_test_id("status")).to_have_attribute("data-state", "connected")
        await page.go_back()
        await expect(page).to_have_url(re.compile(r"/devices$"))
        await expect(device.get_by_test_id("device-name")).to_have_text("Kitchen")

        # remove: asked first; cancelled keeps it, confirmed unbinds it
        dialog = page.get_by_test_id("confirm-dialog")
        await device.get_by_test_id("device-remove").click()
        await expect(dialog).to_contain_text("Kitchen")
        shots.append(await snap(page, tmp_path, "confirm-remove"))
        await dialog.get_by_test_id("confirm-cancel").click()
        await expect(device).to_have_count(1)
        assert await listed_ids(page) == [MAC]
        await device.get_by_test_id("device-remove").click()
        await dialog.get_by_test_id("confirm-ok").click()
        await expect(device).to_have_count(0)
        await expect(page.get_by_test_id("devices-empty")).to_be_visible()
        await expect(page.get_by_test_id("devices-status")).to_have_text("Removed “Kitchen”.")
        assert await listed_ids(page) == []
    finally:
        await connected.close()
    # it must be activated again
    assert "activation" in (await ota(server.url, MAC, CLIENT)).json()
    assert len(set(shots)) == len(shots), "two states looked the same"
