"""The DeviceStore contract: every test runs against SQLite and PostgreSQL (tests/store/conftest.py)."""

from __future__ import annotations

import pytest

from parley.errors import InvalidInput, NotFound
from tests.store.conftest import AnyStore

MAC, CLIENT = "aa:bb:cc:dd:ee:ff", "6f1c0c3e-1111-4222-8333-444455556666"


async def test_a_device_waits_with_a_code_until_bound_then_its_token_finds_it(store: AnyStore) -> None:
    alice = await store.add_user("alice")
    waiting = await store.add_device(MAC, CLIENT, code="123456", user_id=None, firmware="1.0")
    assert (waiting.bound, waiting.code, waiting.name) == (False, "123456", MAC)
    assert await store.device(MAC, CLIENT) == waiting
    assert await store.device(MAC, "another-client") is None  # another Client-Id is another device
    with pytest.raises(NotFound) as err:
        await store.bind_device("654321", alice.id)
    assert err.value.field == "code"
    bound = await store.bind_device("123456", alice.id)
    assert (bound.user_id, bound.code, bound.bound) == (alice.id, None, True) and bound.bound_at is not None
    with pytest.raises(NotFound):
        await store.bind_device("123456", alice.id)  # a code binds once
    await store.set_device_token(bound, "digest-1", "dt_abc", firmware=None)
    found = await store.token_device("digest-1")
    assert found is not None and (found.token_prefix, found.firmware) == ("dt_abc", "1.0")
    await store.set_device_token(bound, "digest-2", "dt_def", firmware="1.1")
    assert await store.token_device("digest-1") is None  # the earlier token stops working
    assert (await store.token_device("digest-2")).firmware == "1.1"  # type: ignore[union-attr]
    assert await store.device_owner(alice.id) == alice
    assert await store.device_owner("u-gone") is None


async def test_an_unbound_devices_token_finds_nothing_and_a_taken_code_is_refused(store: AnyStore) -> None:
    d = await store.add_device(MAC, CLIENT, code="111111", user_id=None, firmware=None)
    await store.set_device_token(d, "digest", "dt_x", firmware=None)
    assert await store.token_device("digest") is None
    with pytest.raises(InvalidInput) as err:
        await store.add_device("11:22:33:44:55:66", CLIENT, code="111111", user_id=None, firmware=None)
    assert err.value.field == "code"
    assert (await store.device(MAC, CLIENT)) is not None  # the holder of the code is kept
    assert await store.device("11:22:33:44:55:66", CLIENT) is None


async def test_a_new_record_replaces_the_old_one_and_its_token(store: AnyStore) -> None:
    alice = await store.add_user("alice")
    first = await store.add_device(MAC, CLIENT, code=None, user_id=alice.id, firmware=None)
    await store.set_device_token(first, "digest", "dt_x", firmware=None)
    again = await store.add_device(MAC, CLIENT, code="222222", user_id=None, firmware="2.0")
    assert await store.device(MAC, CLIENT) == again and not again.bound
    assert await store.token_device("digest") is None
    assert len(await store.list_devices()) == 1


async def test_devices_are_listed_renamed_and_removed_by_mac(store: AnyStore) -> None:
    alice, bob = await store.add_user("alice"), await store.add_user("bob")
    await store.add_device(MAC, CLIENT, code=None, user_id=alice.id, firmware=None)
    await store.add_device(MAC, "client-2", code=None, user_id=alice.id, firmware=None)
    await store.add_device("11:22:33:44:55:66", CLIENT, code=None, user_id=bob.id, firmware=None)
    assert [d.client_id for d in await store.list_devices(alice.id)] == [CLIENT, "client-2"]
    assert len(await store.list_devices()) == 3
    renamed = await store.rename_device(MAC, "kitchen")
    assert renamed.name == "kitchen"
    assert {d.name for d in await store.list_devices(alice.id)} == {"kitchen"}
    for bad in ("", " ", "x" * 65):
        with pytest.raises(InvalidInput):
            await store.rename_device(MAC, bad)
    with pytest.raises(NotFound):
        await store.rename_device("00:00:00:00:00:00", "x")
    await store.remove_device(MAC)
    assert await store.list_devices(alice.id) == []
    with pytest.raises(NotFound):
        await store.remove_device(MAC)
    assert [d.user_id for d in await store.list_devices()] == [bob.id]
