"""The labelling server over HTTP: label, skip, undo, restart-and-continue, traversal refused."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from src.cleaner.label import LabelServer, LabelSession
from src.cleaner.labels import read_label_events, read_labels
from tests.cleaner.helpers import toy_pairs


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return toy_pairs(tmp_path_factory.mktemp("label"), count=5)


class Client:
    """A running server and small helpers to call it."""

    def __init__(self, pairs: Path, labels: Path) -> None:
        self.session = LabelSession(pairs, labels, side="cartoon", target=3)
        self.server = LabelServer(self.session, port=0)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def request(self, method: str, path: str, body: Any = None, content_type: str = "") -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.server.url.rstrip("/") + path, data, method=method)
        if data is not None:
            request.add_header("Content-Type", content_type or "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            kind = response.headers["Content-Type"]
        return json.loads(raw) if kind == "application/json" else raw

    def status(self, path: str, method: str = "GET", body: Any = None, kind: str = "") -> int:
        try:
            self.request(method, path, body, kind)
        except urllib.error.HTTPError as err:
            return err.code
        return 200

    def label(self, label: str) -> dict[str, Any]:
        current = self.request("GET", "/api/state")["current"]
        return self.request("POST", "/api/label", {"id": current, "label": label})["state"]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.session.close()


@pytest.fixture
def client_factory(pairs: Path) -> Iterator[Any]:
    clients: list[Client] = []

    def start(labels: Path) -> Client:
        clients.append(Client(pairs, labels))
        return clients[-1]

    yield start
    for client in clients:
        client.stop()


def test_label_skip_undo_and_restart(client_factory: Any, tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    client = client_factory(labels)
    state = client.request("GET", "/api/state")
    assert state["current"] == "000000" and state["total"] == 5 and state["target"] == 3
    assert client.label("good")["current"] == "000001"
    assert client.label("bad")["current"] == "000002"
    # Every decision is on disk as soon as it is answered.
    assert read_labels(labels) == {"000000": "good", "000001": "bad"}
    undone = client.request("POST", "/api/undo", {})
    assert undone["undone"] == "000001" and undone["state"]["current"] == "000001"
    state = client.label("skip")
    assert state["current"] == "000002"
    assert state["counts"] == {"good": 1, "bad": 0, "skip": 1}
    # Labelling a pair that is not the current one is refused and changes nothing.
    assert client.status("/api/label", "POST", {"id": "000004", "label": "good"}) == 409
    assert client.status("/api/label", "POST", {"id": "000002", "label": "meh"}) == 400
    client.stop()

    restarted = client_factory(labels)
    state = restarted.request("GET", "/api/state")
    assert state["current"] == "000002" and state["decided"] == 2
    restarted.label("bad")
    events = [(e.pair_id, e.label) for e in read_label_events(labels)]
    assert events == [
        ("000000", "good"),
        ("000001", "bad"),
        ("000001", "undo"),
        ("000001", "skip"),
        ("000002", "bad"),
    ]


def test_images_served_by_id_only(client_factory: Any, tmp_path: Path, pairs: Path) -> None:
    client = client_factory(tmp_path / "labels.csv")
    body = client.request("GET", "/image/B/000003")
    assert body == (pairs / "B" / "000003.png").read_bytes()
    assert client.request("GET", "/").startswith(b"<!doctype html>")
    for path in (
        "/image/B/999999",
        "/image/C/000003",
        "/image/B/../labels.csv",
        "/image/B/..%2F..%2Fpaired%2Flabels.csv",
        "/image/B/%2Fetc%2Fpasswd",
        "/image/..%2Flabels.csv",
        "/labels.csv",
    ):
        assert client.status(path) == 404, path


def test_post_must_be_json(client_factory: Any, tmp_path: Path) -> None:
    client = client_factory(tmp_path / "labels.csv")
    form = {"id": "000000", "label": "good"}
    assert client.status("/api/label", "POST", form, "text/plain") == 415
    assert read_labels(tmp_path / "labels.csv") == {}
