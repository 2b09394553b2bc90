"""The loop's asyncio Redis client packs commands with hiredis: what it writes, Redis and the
synchronous client read back as they were sent."""

import asyncio

import pytest
import redis

from core import shared_state


def on_loop(work):
    async def run():
        client = shared_state.loop_client()
        try:
            return await work(client)
        finally:
            await client.aclose()

    return asyncio.run(run())


def test_values_of_every_type_arrive_as_sent():
    values = {"text": "héllo wörld", "int": 2**70, "float": 0.1 + 0.2, "tiny": 1e-07, "bytes": b"raw bytes"}
    keys = {name: shared_state.key("test-packing", name) for name in values}

    async def write(client):
        for name, value in values.items():
            await client.set(keys[name], value, ex=60)
        await client.hset(keys["text"] + ":hash", mapping={"a": 1, "b": "two"})
        return await client.hgetall(keys["text"] + ":hash")

    assert on_loop(write) == {"a": "1", "b": "two"}
    stored = shared_state.client()
    try:
        assert stored.get(keys["text"]) == "héllo wörld"
        assert stored.get(keys["int"]) == str(2**70)
        assert float(stored.get(keys["float"])) == 0.1 + 0.2
        assert float(stored.get(keys["tiny"])) == 1e-07
        assert stored.get(keys["bytes"]) == "raw bytes"
    finally:
        stored.delete(*keys.values(), keys["text"] + ":hash")


def test_commands_named_in_two_words_and_scripts_run():
    async def work(client):
        sha = await client.script_load("return ARGV[1] .. '!'")
        return sha, await client.evalsha(sha, 0, "hi"), await client.execute_command("CONFIG GET", "port")

    sha, reply, config = on_loop(work)
    assert len(sha) == 40 and reply == "hi!"
    assert config == shared_state.client().config_get("port")


def test_a_value_redis_cannot_hold_is_refused_before_it_is_sent():
    async def work(client):
        with pytest.raises(redis.exceptions.DataError):
            await client.set(shared_state.key("test-packing", "none"), None)
        return await client.ping()  # the connection is still good

    assert on_loop(work) is True


def test_the_loop_client_packs_with_hiredis():
    async def work(client):
        return client.connection_pool.connection_class

    assert on_loop(work) is shared_state.HiredisPackedConnection
