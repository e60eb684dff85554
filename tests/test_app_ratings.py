"""Ratings on a public Space, tried as a client would: `python app.py`-style servers driven
through gradio_client, a real SQLite file, tokens and tickets the client did not get from the
server, and a restart (and a kill) that must lose no acknowledged vote."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from gradio_client import Client

import app
from steering.serve.arena import Arena
from steering.serve.identity import Identity
from steering.serve.limits import RateLimits
from steering.serve.service import SteeringService

ROOT = Path(__file__).resolve().parent.parent
ADMIN = "admin-token-of-the-test"
SECRET = b"server-secret-of-the-test"


class Clock:
    offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture(scope="module")
def clock():
    return Clock()


@pytest.fixture(scope="module")
def served(tiny_env, clock):  # noqa: F811
    """The app in-process on a free port: generous limits, and a second app with tight ones."""
    service = SteeringService(
        database_url=f"sqlite:///{tiny_env / 'ratings.db'}", sweep_batch=2, dtype="float32"
    )
    identity = Identity(SECRET, ticket_ttl_s=300, clock=clock)
    demos = [
        app.build_demo(
            service, Arena(service, identity, RateLimits(200, 200, sessions=200), admin_token=ADMIN)
        ),
        app.build_demo(service, Arena(service, identity, RateLimits(pairs=2, votes=2))),
    ]
    clients = []
    for demo in demos:
        _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1")
        clients.append(Client(url, verbose=False))
    yield service, clients[0], clients[1]
    for demo in demos:
        demo.close()


def new_pair(client, token):
    return client.predict(
        prompt="Say something kind.", max_new_tokens=3, rater_token=token, api_name="/pair"
    )


def test_a_forged_token_gets_no_pair_and_no_vote(served):
    _, client, _ = served
    for forged in ("", "made-up", "eyJyIjoiYWJjIn0.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"):
        with pytest.raises(Exception, match="not issued by this server"):
            new_pair(client, forged)
    token = client.predict(api_name="/session")["rater_token"]
    pair = new_pair(client, token)
    with pytest.raises(Exception, match="not issued by this server"):
        client.predict(ticket=pair["ticket"], choice="a", rater_token="made-up", api_name="/rate")


def test_thirty_invented_raters_store_one_vote(served):
    service, client, _ = served
    owner = client.predict(api_name="/session")["rater_token"]
    pair = new_pair(client, owner)
    before = client.predict(api_name="/stats")["ratings"]
    stored = 0
    for _ in range(30):
        someone = client.predict(api_name="/session")["rater_token"]
        try:
            client.predict(ticket=pair["ticket"], choice="a", rater_token=someone, api_name="/rate")
            stored += 1
        except Exception as error:  # noqa: BLE001 (the refusal is the point)
            assert "issued to another rater" in str(error)
    client.predict(ticket=pair["ticket"], choice="b", rater_token=owner, api_name="/rate")
    with pytest.raises(Exception, match="already been voted"):
        client.predict(ticket=pair["ticket"], choice="a", rater_token=owner, api_name="/rate")
    assert stored == 0 and client.predict(api_name="/stats")["ratings"] == before + 1


def test_tampered_and_expired_tickets_store_nothing(served, clock):
    _, client, _ = served
    token = client.predict(api_name="/session")["rater_token"]
    ticket = new_pair(client, token)["ticket"]
    before = client.predict(api_name="/stats")
    body, mac = ticket.split(".")
    for bad in (body + "." + mac[::-1], body[:-4] + "AAAA." + mac, "not-a-ticket"):
        with pytest.raises(Exception, match="ticket was not issued"):
            client.predict(ticket=bad, choice="a", rater_token=token, api_name="/rate")
    clock.offset = 301
    try:
        with pytest.raises(Exception, match="expired"):
            client.predict(ticket=ticket, choice="a", rater_token=token, api_name="/rate")
    finally:
        clock.offset = 0.0
    assert client.predict(api_name="/stats") == before


def test_undo_takes_back_the_last_vote_once(served):
    _, client, _ = served
    token = client.predict(api_name="/session")["rater_token"]
    pair = new_pair(client, token)
    client.predict(ticket=pair["ticket"], choice="a", rater_token=token, api_name="/rate")
    assert client.predict(rater_token=token, api_name="/undo")["your_votes"] == 0
    with pytest.raises(Exception, match="no vote from the last"):
        client.predict(rater_token=token, api_name="/undo")
    again = client.predict(ticket=pair["ticket"], choice="b", rater_token=token, api_name="/rate")
    assert again["your_votes"] == 1


def test_limits_answer_with_one_sentence(served):
    _, _, limited = served
    token = limited.predict(api_name="/session")["rater_token"]
    pairs = [new_pair(limited, token), new_pair(limited, token)]
    with pytest.raises(Exception, match="Too many pairs for you in the last minute"):
        new_pair(limited, token)
    for pair in pairs:
        limited.predict(ticket=pair["ticket"], choice="a", rater_token=token, api_name="/rate")
    with pytest.raises(Exception, match="Too many votes for you in the last minute"):
        limited.predict(ticket=pairs[0]["ticket"], choice="b", rater_token=token, api_name="/rate")


def test_other_peoples_data_is_for_admins(served):
    _, client, limited = served
    for forbidden in (
        {"api_name": "/export"},
        {"admin_token": "guess", "api_name": "/export"},
        {"api_name": "/frontier"},
    ):
        with pytest.raises(Exception, match="Only an admin"):
            client.predict(**forbidden)
    with pytest.raises(Exception, match="Only an admin"):
        limited.predict(admin_token=ADMIN, api_name="/export")  # that app has no admin token
    assert client.predict(admin_token=ADMIN, api_name="/export").strip()
    assert client.predict(admin_token=ADMIN, api_name="/frontier")["points"]
    stats = client.predict(api_name="/stats")
    assert set(stats) == {"generations", "ratings", "raters"}
    assert all(isinstance(v, int) and v >= 0 for v in stats.values())


# --- restarts, as a Space restarts: the log directory survives, the database may not ---------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(tiny_env, database: Path, log_dir: Path) -> tuple[subprocess.Popen, Client]:
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "DATABASE_URL": f"sqlite:///{database}",
        "STEERING_LOG_DIR": str(log_dir),
        "STEERING_SECRET": SECRET.decode(),
        "STEERING_BASE_MODEL": str(tiny_env / "tiny-base"),
        "STEERING_ADAPTERS": str(tiny_env / "adapters"),
        "STEERING_DTYPE": "float32",
        "STEERING_VOTES_PER_MINUTE": "1000",
        "STEERING_PAIRS_PER_MINUTE": "1000",
    }
    server = subprocess.Popen(
        [sys.executable, "app.py"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            assert server.poll() is None, "the app exited"
            assert time.monotonic() < deadline, "the app did not start"
            time.sleep(0.3)
    return server, Client(f"http://127.0.0.1:{port}/", verbose=False)


def stop(server: subprocess.Popen, sig=signal.SIGTERM) -> None:
    server.send_signal(sig)
    server.wait(30)


@pytest.mark.slow
def test_a_restart_with_an_empty_database_keeps_every_rating(tiny_env, tmp_path):  # noqa: F811
    log_dir = tmp_path / "log"
    server, client = start_app(tiny_env, tmp_path / "first.db", log_dir)
    try:
        token = client.predict(api_name="/session")["rater_token"]
        for _ in range(3):
            pair = new_pair(client, token)
            client.predict(ticket=pair["ticket"], choice="a", rater_token=token, api_name="/rate")
        client.predict(rater_token=token, api_name="/undo")
        before = client.predict(api_name="/stats")
    finally:
        stop(server)
    assert before["ratings"] == 2
    server, client = start_app(tiny_env, tmp_path / "second.db", log_dir)
    try:
        after = client.predict(api_name="/stats")
        assert after["ratings"] == before["ratings"] and after["raters"] == before["raters"]
        # the rater's identity survives too: the same token still counts its votes
        pair = new_pair(client, token)
        vote = client.predict(
            ticket=pair["ticket"], choice="b", rater_token=token, api_name="/rate"
        )
        assert vote["your_votes"] == 3
    finally:
        stop(server)


@pytest.mark.slow
def test_a_kill_mid_vote_loses_no_acknowledged_vote(tiny_env, tmp_path):  # noqa: F811
    log_dir = tmp_path / "log"
    server, client = start_app(tiny_env, tmp_path / "killed.db", log_dir)
    acknowledged, pairs = [], []
    try:
        token = client.predict(api_name="/session")["rater_token"]
        pairs = [new_pair(client, token) for _ in range(12)]

        def voter(mine):
            for pair in mine:
                key = str(uuid.uuid4())
                try:
                    client.predict(
                        ticket=pair["ticket"],
                        choice="a",
                        rater_token=token,
                        rating_uuid=key,
                        api_name="/rate",
                    )
                except Exception:  # noqa: BLE001 (the server was killed under it)
                    return
                acknowledged.append(key)

        threads = [threading.Thread(target=voter, args=(pairs[i::3],)) for i in range(3)]
        for thread in threads:
            thread.start()
        while len(acknowledged) < 4:
            time.sleep(0.01)
        server.kill()  # SIGKILL: no clean shutdown
        for thread in threads:
            thread.join(30)
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(30)
    server, client = start_app(tiny_env, tmp_path / "fresh.db", log_dir)
    try:
        exported = client.predict(api_name="/stats")
    finally:
        stop(server)
    # every acknowledged vote is back, none twice (a vote stored but not yet acknowledged
    # when the kill came may be back as well)
    assert len(acknowledged) >= 4
    assert len(acknowledged) <= exported["ratings"] <= len(pairs)
