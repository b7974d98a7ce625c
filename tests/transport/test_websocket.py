"""The websocket mirror with a real ``websockets`` client: the behaviours the React front-end
relies on (ecosystem.md §1.1, protocol.md §4)."""

from __future__ import annotations

import asyncio
import base64
import urllib.error
import urllib.request

import pytest
from evqtest import create_workflow, one_task
from lxml import etree
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from evqueue.protocol.auth import expected_response, sha1_hex


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def session(daemon, protocol: str, password: str = "admin"):
    ws = await connect(f"ws://127.0.0.1:{daemon.ws_port}/", subprotocols=[protocol],
                       max_size=None)
    challenge = etree.fromstring((await ws.recv()).encode())
    assert challenge.tag == "auth"
    resp = expected_response(sha1_hex(password), challenge.get("challenge"))
    await ws.send(f"<auth response='{resp}' user='admin' />")
    return ws


async def doc(ws, timeout: float = 10) -> etree._Element:
    return etree.fromstring((await asyncio.wait_for(ws.recv(), timeout)).encode())


async def test_api_subprotocol(daemon):
    ws = await session(daemon, "api")
    assert ws.subprotocol == "api"
    ready = await doc(ws)
    assert ready.tag == "ready" and ready.find("modules/module") is not None
    await ws.send('<ping action="whatever" />')  # unrelated action attribute: still a ping
    ping = await doc(ws)
    assert ping.get("status") == "OK" and ping.get("version") == "3.3"
    await ws.send("<quit />")  # ignored on websockets
    await ws.send('<queuepool action="list" />')
    assert (await doc(ws))[0].get("name") == "default"
    await ws.send('<queuepool action="nope" />')
    assert (await doc(ws)).get("error-code") == "UNKNOWN_COMMAND"
    # a 1 MB document in, and a 1 MB answer out
    big = "x" * (1 << 20)
    await ws.send(f'<user action="update_preferences" name="admin" preferences="{big}" />')
    assert (await doc(ws)).get("status") == "OK"
    await ws.send('<user action="get" name="admin" />')
    assert len((await doc(ws))[0].get("preferences")) == 1 << 20
    await ws.close()


async def test_bad_login_and_malformed_xml_close_with_1011(daemon):
    ws = await session(daemon, "api", password="wrong")
    with pytest.raises(ConnectionClosed) as e:
        await doc(ws)
    assert e.value.rcvd.code == 1011 and "Invalid authentication" in e.value.rcvd.reason
    ws = await session(daemon, "api")
    await doc(ws)
    await ws.send("<a></b>")
    with pytest.raises(ConnectionClosed) as e:
        await doc(ws)
    assert e.value.rcvd.code == 1011 and "Invalid query XML structure" in e.value.rcvd.reason


def test_plain_http_gets_403(daemon):
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{daemon.ws_port}/", timeout=5)
    assert e.value.code == 403


async def test_synchronous_launch_just_waits(make_daemon):
    d = make_daemon(**{"dpd.interval": "1"})
    with d.client() as c:
        create_workflow(c, "slow", one_task("/bin/sleep", "2"))
    ws = await session(d, "api")
    await doc(ws)
    await ws.send('<instance action="launch" name="slow" mode="synchronous" />')
    answer = await doc(ws, timeout=10)
    assert answer.tag == "response" and answer.get("workflow-instance-id")
    assert answer.get("wait") is None  # no TCP-style pings, no timeout
    await ws.close()


async def test_events_send_now_ack_throttling(daemon):
    with daemon.client() as c:
        create_workflow(c, "quick", one_task("/bin/true"))
    ws = await session(daemon, "events")
    assert ws.subprotocol == "events"
    await doc(ws)
    status = b64('<status action="query" type="workflows" />')
    await ws.send(f'<event action="subscribe" type="INSTANCE_TERMINATED" api_cmd="{status}" '
                  'send_now="yes" external_id="3" />')
    first = await doc(ws)
    assert first.get("external-id") == "3" and first.get("count") == "0"
    event_id = int(first.get("event-id"))
    with daemon.client() as c:
        ids = [int(c.query('<instance action="launch" name="quick" />')
                   .get("workflow-instance-id")) for _ in range(3)]
        await asyncio.sleep(1)
    # nothing is pushed until the online event is acknowledged
    with pytest.raises(TimeoutError):
        await doc(ws, timeout=0.5)
    await ws.send(f'<event action="ack" event_id="{event_id}" />')
    merged = await doc(ws)
    assert sorted(int(i) for i in merged.get("object-id").split(",")) == ids
    assert int(merged.get("event-id")) > event_id
    await ws.send('<event action="unsubscribeall" />')
    await ws.send("<ping />")  # anything but <event> closes the events protocol
    with pytest.raises(ConnectionClosed) as e:
        await doc(ws)
    assert e.value.rcvd.code == 1011


async def test_events_object_filter_and_ko_push(daemon):
    with daemon.client() as c:
        create_workflow(c, "quick", one_task("/bin/true"))
    ws = await session(daemon, "events")
    await doc(ws)
    bad = b64('<queue action="get" id="999" />')
    query = b64('<instance action="query" id="1" />')
    await ws.send(f'<event action="subscribe" type="INSTANCE_TERMINATED" api_cmd="{query}" '
                  'object_id="2" external_id="7" />')
    await ws.send(f'<event action="subscribe" type="INSTANCE_STARTED" api_cmd="{bad}" '
                  'external_id="8" />')
    with daemon.client() as c:
        for _ in range(2):
            c.query('<instance action="launch" name="quick" />')
    pushes = [await doc(ws), await doc(ws)]
    ko = next(p for p in pushes if p.get("external-id") == "8")
    assert ko.get("status") == "KO" and ko.get("event-id")  # KO pushes keep their ids
    ok = next(p for p in pushes if p.get("external-id") == "7")
    assert ok.get("object-id") == "2"
    with pytest.raises(TimeoutError):  # instance 1 terminated too, but object_id filters it
        await doc(ws, timeout=0.5)
    await ws.send('<event action="subscribe" type="NO_SUCH_EVENT" api_cmd="" />')
    with pytest.raises(ConnectionClosed) as e:
        await doc(ws)
    assert "Unknown event : NO_SUCH_EVENT" in e.value.rcvd.reason
