"""The labelling server over HTTP: label, skip, undo, restart-and-continue, traversal refused."""

from __future__ import annotations

import errno
import json
import shutil
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from src.cleaner import labels as labels_module
from src.cleaner.label import LabelServer, LabelSession, check_port
from src.cleaner.labels import LabelLog, read_label_events, read_labels
from src.common.errors import UserError
from tests.cleaner.helpers import toy_pairs
from tests.conftest import run_module


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


def raw_post(client: Client, headers: str, body: bytes = b"") -> int:
    """The status of a hand-written POST (headers as one string), the answer read whole."""
    host, port = client.server.server_address[:2]
    with socket.create_connection((host, port), timeout=10) as conn:
        conn.sendall(
            b"POST /api/label HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + headers.encode()
            + b"\r\n\r\n"
            + body
        )
        answer = conn.makefile("rb").readline()
    return int(answer.split()[1])


def test_bad_content_length_and_deep_json_are_400(client_factory: Any, tmp_path: Path) -> None:
    client = client_factory(tmp_path / "labels.csv")
    assert raw_post(client, "Content-Length: abc") == 400
    assert raw_post(client, "Content-Length: -5") == 400
    nested = b"[" * 2000 + b"]" * 2000
    assert raw_post(client, f"Content-Length: {len(nested)}", nested) == 400
    assert client.request("GET", "/api/state")["decided"] == 0, "the server still answers"


def test_symlinks_out_of_the_pairs_folder_are_refused(tmp_path: Path) -> None:
    pairs = toy_pairs(tmp_path / "pairs", count=3)
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not for the page")
    shutil.copyfile(pairs / "A" / "000000.png", pairs / "A" / "000098.png")
    shutil.copyfile(pairs / "A" / "000000.png", pairs / "A" / "000099.png")
    (pairs / "B" / "000098.png").symlink_to(secret)
    (pairs / "B" / "000099.png").symlink_to(pairs / "B" / "000001.png")
    client = Client(pairs, tmp_path / "labels.csv")
    try:
        assert client.status("/image/B/000098") == 404
        assert client.request("GET", "/image/B/000099") == (pairs / "B" / "000001.png").read_bytes()
    finally:
        client.stop()


def test_port_must_be_a_port_number() -> None:
    assert check_port("0") == 0 and check_port(8765) == 8765
    for bad in ("abc", 99999, -1):
        with pytest.raises(UserError, match=f"port={bad} is not a port number"):
            check_port(bad)


def test_an_unwritable_labels_file_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("id,label,time\n")

    def read_only(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if "r" not in mode or "+" in mode:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(labels_module, "open", read_only, raising=False)
    with pytest.raises(UserError, match=r"labels=.*labels.csv: cannot write \(Permission denied\)"):
        LabelLog(labels)


@pytest.mark.slow
def test_label_command_with_a_bad_port_is_one_line(tmp_path: Path, pairs: Path) -> None:
    result = run_module(
        "src.cleaner.label", f"pairs={pairs}", f"labels={tmp_path / 'l.csv'}", "port=99999"
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: port=99999 is not a port number; use 0-65535 (0 picks a free one)"
    ]
