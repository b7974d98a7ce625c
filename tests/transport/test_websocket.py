"""The websocket mirror with a real ``websockets`` client: the behaviours the React front-end
relies on (ecosystem.md §1.1, protocol.md §4, live-findings 13, 21-24)."""

from __future__ import annotations

import asyncio
import base64
import datetime
import http.client
import ssl
import time
from pathlib import Path

import pytest
from evqtest import create_workflow, one_task
from lxml import etree
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from evqueue.protocol.auth import expected_response, sha1_hex

#: each push runs ``<ping/>``: the catalogue tests look at the ids only
PING = base64.b64encode(b"<ping/>").decode()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def subscribe(type_: str, api: str = "<ping/>", **attrs: str) -> str:
    extra = "".join(f' {k}="{v}"' for k, v in attrs.items())
    return f'<event action="subscribe" type="{type_}" api_cmd="{b64(api)}"{extra} />'


async def open_ws(daemon, protocol: str | None, **kwargs: object) -> ClientConnection:
    return await connect(f"ws://127.0.0.1:{daemon.ws_port}/",
                         subprotocols=[protocol] if protocol else None, max_size=None,
                         **kwargs)


async def authenticate(ws: ClientConnection, user: str = "admin", password: str = "admin",
                       response: str | None = None) -> None:
    challenge = await doc(ws)
    assert challenge.tag == "auth" and len(challenge.get("challenge")) == 40
    if response is None:
        response = expected_response(sha1_hex(password), challenge.get("challenge"))
    await ws.send(f"<auth response='{response}' user='{user}' />")


async def login(daemon, protocol: str, user: str = "admin",
                password: str = "admin") -> ClientConnection:
    """A session past the ``ready`` greeting."""
    ws = await open_ws(daemon, protocol)
    assert ws.subprotocol == protocol  # the browser fails the connection without the echo
    await authenticate(ws, user, password)
    ready = await doc(ws)
    assert ready.tag == "ready" and ready.get("node") == "localhost"
    return ws


async def doc(ws: ClientConnection, timeout: float = 10) -> etree._Element:
    message = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(message, str) and not message.endswith("\n")  # text, no newline
    return etree.fromstring(message.encode())


async def closed(ws: ClientConnection, timeout: float = 10) -> tuple[int, str]:
    """Read until the server closes; the close code and reason."""
    with pytest.raises(ConnectionClosed) as e:
        while True:
            await doc(ws, timeout)
    assert e.value.rcvd is not None
    return e.value.rcvd.code, e.value.rcvd.reason


async def nothing(ws: ClientConnection, seconds: float = 0.4) -> None:
    with pytest.raises(TimeoutError):
        await doc(ws, timeout=seconds)


def launch(client, name: str) -> int:
    return int(client.query(f'<instance action="launch" name="{name}" />')
               .get("workflow-instance-id"))


# -- api ------------------------------------------------------------------------------------
async def test_api_session_fifo_and_large_frames(make_daemon):
    d = make_daemon(**{"dpd.interval": "1"})
    with d.client() as c:
        create_workflow(c, "slow", one_task("/bin/sleep", "1.5"))
    ws = await login(d, "api")
    await ws.send('<ping action="undefined" />')  # the Nodes page's junk action
    ping = await doc(ws)
    assert ping.get("status") == "OK" and ping.get("version") == "3.3"
    # quit is ignored; queries are answered one by one in order, a synchronous launch simply
    # waits (no TCP-style <ping/> and no timeout after dpd.interval)
    start = time.monotonic()
    for query in ("<quit />", '<instance action="launch" name="slow" mode="synchronous" />',
                  "<ping />", '<queuepool action="nope" />'):
        await ws.send(query)
    launched = await doc(ws)
    assert launched.get("workflow-instance-id") and launched.get("wait") is None
    assert time.monotonic() - start >= 1.4  # answered when the instance ended
    assert (await doc(ws)).get("version") == "3.3"
    assert (await doc(ws)).get("error-code") == "UNKNOWN_COMMAND"  # KO keeps the session
    # a 1 MB document in, and a 1 MB answer out
    big = "x" * (1 << 20)
    await ws.send(f'<user action="update_preferences" name="admin" preferences="{big}" />')
    assert (await doc(ws)).get("status") == "OK"
    await ws.send('<user action="get" name="admin" />')
    assert (await doc(ws))[0].get("preferences") == big
    await ws.close()


async def test_session_errors_close_with_1011(daemon):
    ws = await open_ws(daemon, "api")
    await authenticate(ws, password="wrong")
    assert await closed(ws) == (1011, "Invalid authentication")
    ws = await open_ws(daemon, "events")
    await authenticate(ws, response="hmac")  # the original's bypass
    assert await closed(ws) == (1011, "Invalid authentication")
    ws = await open_ws(daemon, "api")
    await doc(ws)
    await ws.send("<ping />")
    assert await closed(ws) == (1011, "Expected 'auth' node")
    ws = await login(daemon, "api")
    await ws.send("<a></b>")
    code, reason = await closed(ws)
    assert code == 1011 and reason.startswith("Invalid query XML structure")
    ws = await login(daemon, "events")
    await ws.send("<ping />")
    assert await closed(ws) == (1011, "Only event query group is supported by this protocol")
    ws = await login(daemon, "events")
    await ws.send(subscribe("É" * 100))  # the reason is cut to fit a close frame
    code, reason = await closed(ws)
    assert code == 1011 and reason.startswith("Unknown event : ÉÉ")
    assert len(reason.encode()) <= 123
    for protocol in (None, "soap"):  # a subprotocol is required, and only these two
        with pytest.raises(InvalidStatus) as e:
            await open_ws(daemon, protocol)
        assert e.value.response.status_code == 400


def test_plain_http_gets_403(daemon):
    conn = http.client.HTTPConnection("127.0.0.1", daemon.ws_port, timeout=5)
    conn.request("GET", "/index.html")
    r = conn.getresponse()
    assert (r.status, r.read()) == (403, b"Forbidden")
    assert r.headers.get_all("Server") == ["evQueue websockets server"]
    conn.close()


def _self_signed(directory: Path) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
            .sign(key, hashes.SHA256()))
    crt, pem = directory / "ws.crt", directory / "ws.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return str(crt), str(pem)


async def test_tls(make_daemon, tmp_path):
    crt, key = _self_signed(tmp_path)
    d = make_daemon(**{"ws.ssl.crt": crt, "ws.ssl.key": key})
    context = ssl.create_default_context(cafile=crt)
    ws = await connect(f"wss://localhost:{d.ws_port}/", subprotocols=["api"], ssl=context)
    await authenticate(ws)
    assert (await doc(ws)).tag == "ready"
    await ws.send("<ping />")
    assert (await doc(ws)).get("status") == "OK"
    await ws.close()
    with pytest.raises((InvalidHandshake, ConnectionError, EOFError)):
        await open_ws(d, "api")  # plain ws:// on the TLS port


async def test_connection_limit(make_daemon):
    d = make_daemon(**{"ws.connections.max": "2"})
    first, second = await login(d, "api"), await login(d, "events")
    third = await open_ws(d, "api")
    assert await closed(third) == (1013, "Too many connections")
    await first.close()
    deadline = time.monotonic() + 5
    while True:  # a slot is free again once the server has seen the close
        ws = await open_ws(d, "api")
        try:
            assert (await doc(ws)).tag == "auth"
            break
        except ConnectionClosed:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    await ws.close()
    await second.close()


# -- events ---------------------------------------------------------------------------------
async def test_send_now_ack_and_coalesced_object_ids(daemon):
    with daemon.client() as c:
        create_workflow(c, "quick", one_task("/bin/true"))
    ws = await login(daemon, "events")
    await ws.send(subscribe("INSTANCE_TERMINATED", '<status action="query" type="workflows" />',
                            send_now="yes", external_id="3"))
    first = await doc(ws)
    assert first.get("external-id") == "3" and first.get("count") == "0"
    assert first.get("object-id") is None  # send_now without object_id fires for object 0
    event_id = int(first.get("event-id"))
    with daemon.client() as c:
        ids = [launch(c, "quick") for _ in range(3)]
        await asyncio.sleep(1)
    await nothing(ws)  # nothing more until the online event is acknowledged
    await ws.send(f'<event action="ack" event_id="{event_id}" />')
    merged = await doc(ws)
    assert sorted(int(i) for i in merged.get("object-id").split(",")) == ids
    assert merged.get("external-id") == "3" and int(merged.get("event-id")) > event_id
    # acknowledged in another spelling (parsed as XML); nothing was merged meanwhile
    await ws.send(f"<event event_id='{merged.get('event-id')}' action='ack'></event>")
    await nothing(ws)
    with daemon.client() as c:
        fourth = launch(c, "quick")
    assert (await doc(ws)).get("object-id") == str(fourth)
    await ws.send('<event action="unsubscribeall" />')
    with daemon.client() as c:
        launch(c, "quick")
    await nothing(ws, 0.6)
    await ws.close()


async def test_send_now_answers_are_computed_after_the_subscription(daemon):
    ws, other = await login(daemon, "events"), await login(daemon, "events")
    stats = '<statistics action="query" type="global" />'
    for n in (1, 2, 3):  # the same command, but no engine event in between
        conn = ws if n % 2 else other
        await conn.send(subscribe("TAG_CREATED", stats, send_now="yes", external_id=str(n)))
        push = await doc(conn)
        assert push.get("external-id") == str(n) and push[0].get("ws_subscriptions") == str(n)
    await ws.close()
    await other.close()


async def test_rights_object_filter_and_ko_pushes(daemon):
    with daemon.client() as c:
        create_workflow(c, "slow", one_task("/bin/sleep", "1"))
        c.query('<user action="create" name="bob" password="pw" profile="USER" />')
    admin, bob = await login(daemon, "events"), await login(daemon, "events", "bob", "pw")
    status = '<status action="query" type="workflows" />'
    for ws in (admin, bob):  # the same command, run as each subscriber
        await ws.send(subscribe("INSTANCE_STARTED", status, external_id="1"))
    await bob.send(subscribe("INSTANCE_STARTED", '<queue action="get" id="1" />',
                             external_id="2"))
    await admin.send(subscribe("INSTANCE_TERMINATED", status, object_id="999",
                               external_id="3"))
    with daemon.client() as c:
        iid = launch(c, "slow")
    seen = await doc(admin)
    assert seen.get("object-id") == str(iid) and seen[0].get("id") == str(iid)
    hidden, ko = sorted([await doc(bob), await doc(bob)], key=lambda e: e.get("external-id"))
    assert hidden.get("count") == "1" and len(hidden) == 0  # no read right on "slow"
    assert ko.get("error-code") == "INSUFFICIENT_RIGHTS"  # KO pushes keep their ids
    assert ko.get("event-id") and ko.get("object-id") == str(iid)
    await nothing(admin, 1.5)  # the instance terminated, but object_id 999 filters it
    await admin.close()
    await bob.close()


async def test_without_throttling_every_occurrence_is_pushed(make_daemon):
    d = make_daemon(**{"ws.events.throttling": "no"})
    with d.client() as c:
        create_workflow(c, "quick", one_task("/bin/true"))
    ws = await login(d, "events")
    await ws.send(subscribe("INSTANCE_TERMINATED"))
    with d.client() as c:
        ids = [launch(c, "quick") for _ in range(3)]
    pushes = [await doc(ws) for _ in ids]  # never acknowledged
    assert sorted(int(p.get("object-id")) for p in pushes) == ids
    assert len({p.get("event-id") for p in pushes}) == 3
    await ws.close()


PROGRESS = (
    '<workflow><subjobs><job><tasks><task path="/bin/sh" queue="default">'
    "<input>-c</input><input>printf '%%50\\n' &gt;&amp;3; sleep 0.3</input>"
    "</task></tasks></job></subjobs></workflow>"
)


async def test_event_catalogue(make_daemon):
    """Each event of protocol.md §4.7 fires, with its object id, in the engine's order."""
    d = make_daemon(**{"ws.events.throttling": "no"})
    types = """INSTANCE_STARTED INSTANCE_TERMINATED INSTANCE_REMOVED INSTANCE_TAGGED
        INSTANCE_UNTAGGED TASK_ENQUEUE TASK_EXECUTE TASK_TERMINATE TASK_PROGRESS QUEUE_ENQUEUE
        QUEUE_DEQUEUE QUEUE_EXECUTE QUEUE_TERMINATE QUEUE_CREATED QUEUE_MODIFIED QUEUE_REMOVED
        WORKFLOW_CREATED WORKFLOW_MODIFIED WORKFLOW_REMOVED WORKFLOW_SUBSCRIBED TAG_CREATED
        USER_CREATED GIT_PULLED GIT_SAVED GIT_LOADED GIT_REMOVED""".split()
    ws = await login(d, "events")
    for i, t in enumerate(types, 1):
        await ws.send(subscribe(t, external_id=str(i)))
    with d.client() as c:
        wid = create_workflow(c, "progress", PROGRESS)
        iid = launch(c, "progress")
        deadline = time.monotonic() + 10
        while c.query(f'<instance action="query" id="{iid}" />')[0].get("status") != \
                "TERMINATED" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        tag = c.query('<tag action="create" label="seen" />').get("tag-id")
        c.query(f'<instance action="tag" id="{iid}" tag_id="{tag}" />')
        c.query(f'<instance action="untag" id="{iid}" tag_id="{tag}" />')
        c.query(f'<instance action="delete" id="{iid}" />')
        qid = c.query('<queue action="create" name="q2" concurrency="1" scheduler="default" '
                      'dynamic="no" />').get("queue-id")
        c.query(f'<queue action="edit" id="{qid}" name="q2" concurrency="2" '
                'scheduler="default" dynamic="no" />')
        c.query(f'<queue action="delete" id="{qid}" />')
        uid = c.query('<user action="create" name="eve" password="pw" profile="USER" />'
                      ).get("user-id")
        c.query(f'<workflow action="edit" id="{wid}" name="progress" '
                f'content="{b64(PROGRESS)}" />')
        c.query(f'<workflow action="delete" id="{wid}" />')
    fired: dict[str, list[tuple[int, str | None]]] = {}
    while True:
        try:
            push = await doc(ws, timeout=0.5)
        except TimeoutError:
            break
        name = types[int(push.get("external-id")) - 1]
        fired.setdefault(name, []).append((int(push.get("event-id")), push.get("object-id")))
    first = {name: ids[0][0] for name, ids in fired.items()}
    objects = {name: {o for _, o in ids} for name, ids in fired.items()}
    for name in ("INSTANCE_STARTED", "INSTANCE_TERMINATED", "INSTANCE_TAGGED",
                 "INSTANCE_UNTAGGED", "INSTANCE_REMOVED", "TASK_ENQUEUE", "TASK_EXECUTE",
                 "TASK_PROGRESS", "TASK_TERMINATE"):
        assert objects.get(name) == {str(iid)}, name
    for name in ("QUEUE_ENQUEUE", "QUEUE_DEQUEUE", "QUEUE_EXECUTE", "QUEUE_TERMINATE",
                 "TAG_CREATED"):
        assert objects.get(name) == {None}, name
    for name in ("WORKFLOW_CREATED", "WORKFLOW_SUBSCRIBED", "WORKFLOW_MODIFIED",
                 "WORKFLOW_REMOVED"):
        assert objects.get(name) == {str(wid)}, name
    assert objects["USER_CREATED"] == {uid}
    assert {"QUEUE_CREATED", "QUEUE_MODIFIED", "QUEUE_REMOVED"} <= fired.keys()
    assert not any(name.startswith("GIT_") for name in fired)  # accepted, never fired
    assert len(fired["TASK_PROGRESS"]) >= 2  # the task's 50 %, then 100 % at its end
    order = ["TASK_ENQUEUE", "INSTANCE_STARTED", "TASK_EXECUTE", "TASK_TERMINATE",
             "INSTANCE_TERMINATED", "INSTANCE_TAGGED", "INSTANCE_UNTAGGED", "INSTANCE_REMOVED"]
    assert sorted(order, key=first.__getitem__) == order  # TASK_ENQUEUE first, as finding 23
    queue = ["QUEUE_ENQUEUE", "QUEUE_DEQUEUE", "QUEUE_EXECUTE", "QUEUE_TERMINATE"]
    assert sorted(queue, key=first.__getitem__) == queue
    await ws.close()


async def test_pushes_show_the_state_after_their_event(daemon):
    """What the front-end reloads on an event already shows it: a terminated instance is in
    ``instances list`` (desktop notifications), an executing task is EXECUTING."""
    with daemon.client() as c:
        create_workflow(c, "quick", one_task("/bin/true"))
        create_workflow(c, "slow", one_task("/bin/sleep", "1"))
    ws = await login(daemon, "events")
    await ws.send(subscribe("INSTANCE_TERMINATED", '<instances action="list" limit="50" />',
                            external_id="1"))
    with daemon.client() as c:
        ids = {launch(c, "quick") for _ in range(10)}
        slow = max(ids) + 1  # the next instance id
        await ws.send(subscribe("TASK_EXECUTE", f'<instance action="query" id="{slow}" />',
                                object_id=str(slow), external_id="2"))
        await asyncio.sleep(0.1)
        assert launch(c, "slow") == slow
    pushed: set[int] = set()
    executing = None
    while ids - pushed or executing is None:
        push = await doc(ws)
        await ws.send(f'<event action="ack" event_id="{push.get("event-id")}" />')
        if push.get("external-id") == "2":
            executing = push.find("workflow/subjobs/job/tasks/task").get("status")
            continue
        listed = {int(w.get("id")): w.get("status") for w in push}
        for oid in push.get("object-id").split(","):
            assert listed.get(int(oid)) == "TERMINATED"
            pushed.add(int(oid))
    assert executing == "EXECUTING"
    await ws.close()


async def test_slow_subscriber_is_dropped_without_slowing_the_engine(make_daemon):
    d = make_daemon(**{"ws.events.throttling": "no"})
    with d.client() as c:  # every push is a 512 KB answer
        c.query(f'<user action="update_preferences" name="admin" '
                f'preferences="{"x" * (1 << 19)}" />')
    ws = await login(d, "events")
    for _ in range(1000):
        await ws.send(subscribe("TAG_CREATED", '<user action="get" name="admin" />'))
    await asyncio.sleep(0.2)
    ws.transport.pause_reading()  # a subscriber that stops reading
    with d.client() as c:
        for i in range(12):
            t0 = time.monotonic()
            c.query(f'<tag action="create" label="t{i}" />')
            assert time.monotonic() - t0 < 2  # never waits for the subscriber
    deadline = time.monotonic() + 10
    while "too slow" not in d.log() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert "Websocket subscriber too slow" in d.log()
    ws.transport.resume_reading()
    with pytest.raises(ConnectionClosed):
        while True:
            await doc(ws)
    await asyncio.sleep(0.2)
    with d.client() as c:
        stats = c.query('<statistics action="query" type="global" />')[0]
    assert stats.get("current_ws_connections") == "0" and stats.get("ws_subscriptions") == "0"


async def test_events_with_authentication_disabled(make_daemon):
    d = make_daemon(**{"core.auth.enable": "no"})
    ws = await open_ws(d, "events")
    assert (await doc(ws)).tag == "ready"  # no challenge
    await ws.send(subscribe("TAG_CREATED", "<ping />", send_now="yes", external_id="4"))
    first = await doc(ws)
    assert first.get("external-id") == "4" and first.get("status") == "OK"
    await ws.send(f'<event action="ack" event_id="{first.get("event-id")}" />')
    with d.client() as c:
        c.query('<tag action="create" label="x" />')
    assert (await doc(ws)).get("external-id") == "4"
    await ws.close()
