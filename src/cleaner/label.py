"""``python -m src.cleaner.label pairs=DIR labels=FILE``: label pairs good or bad in a browser.

Serves one page on 127.0.0.1 (never on other interfaces) that shows the first unlabelled pair,
face and cartoon side by side, with keys ``g`` good, ``b`` bad, ``s`` skip and ``u`` undo. Each
decision is appended to the labels file at once (see ``src.cleaner.labels``), so closing the tab
or killing the server loses nothing, and starting again continues where labelling stopped.

Images are served only by id from the list made at start-up (``/image/A/<id>``,
``/image/B/<id>``): a request never names a file path, so nothing outside the pairs folder can
be read, and an unknown id is a 404. Decisions must be posted as JSON, which a page on another
site cannot do without a preflight this server never answers. Only the standard library.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import hydra
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from src.cleaner.labels import (
    DECISIONS,
    SIDE_FOLDERS,
    LabelLog,
    check_side,
    ids_for_side,
    pair_images,
)
from src.cleaner.page import PAGE
from src.common.errors import UserError
from src.common.stage import CONFIG_DIR, fail

HOST = "127.0.0.1"
MAX_BODY_BYTES = 4096
CONTENT_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
}


class LabelSession:
    """The pairs to label, the labels file, and which pair comes next; safe across threads."""

    def __init__(
        self,
        pairs_dir: str | os.PathLike[str],
        labels_path: str | os.PathLike[str],
        side: str = "cartoon",
        target: int = 300,
    ) -> None:
        self.side = check_side(side)
        if target < 1:
            raise UserError(f"target={target} must be at least 1 (pairs wanted per class)")
        self.target = target
        self.root = Path(pairs_dir).resolve()
        self.images = pair_images(pairs_dir)
        self.ids = ids_for_side(self.images, side, Path(pairs_dir))
        self.known = set(self.ids)
        self.log = LabelLog(labels_path)
        self.lock = threading.Lock()

    def current(self) -> str | None:
        """The first pair, in file-name order, with no decision in force."""
        decided = self.log.decided()
        return next((pair_id for pair_id in self.ids if pair_id not in decided), None)

    def state(self) -> dict[str, Any]:
        """What the page shows: the current pair, its images, the counts and the target."""
        with self.lock:
            return self._state()

    def _state(self) -> dict[str, Any]:
        current = self.current()
        counts = self.log.counts()
        decided = self.log.decided()
        return {
            "current": current,
            "sides": sorted(self.images[current]) if current is not None else [],
            "judged": list(SIDE_FOLDERS[self.side]),
            "side": self.side,
            "counts": {label: counts.get(label, 0) for label in DECISIONS},
            "target": self.target,
            "total": len(self.ids),
            "decided": sum(1 for pair_id in self.ids if pair_id in decided),
        }

    def label(self, pair_id: str, label: str) -> tuple[HTTPStatus, dict[str, Any]]:
        """Record ``label`` for the current pair; any other pair is a conflict (409)."""
        if label not in DECISIONS:
            return HTTPStatus.BAD_REQUEST, {"error": f"label must be one of {DECISIONS}"}
        with self.lock:
            if pair_id != self.current():
                return HTTPStatus.CONFLICT, {
                    "error": f"pair {pair_id!r} is not the current pair; showing the current one",
                    "state": self._state(),
                }
            self.log.append(pair_id, label)
            return HTTPStatus.OK, {"state": self._state()}

    def undo(self) -> dict[str, Any]:
        """Take back the latest decision (if any); the page then shows the first unlabelled."""
        with self.lock:
            undone = self.log.undo()
            return {"undone": None if undone is None else undone.pair_id, "state": self._state()}

    def image_path(self, folder: str, pair_id: str) -> Path | None:
        """The file of ``folder`` (A or B) for a known id, or None; a symlink that leads out of
        the pairs folder (to ``/etc/passwd``, say) is resolved and refused."""
        if pair_id not in self.known or folder not in self.images[pair_id]:
            return None
        try:
            target = self.images[pair_id][folder].resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        return target if target.is_relative_to(self.root) and target.is_file() else None

    def close(self) -> None:
        """Close the labels file."""
        self.log.close()


class LabelHandler(BaseHTTPRequestHandler):
    """Routes: ``/``, ``/api/state``, ``/image/<A|B>/<id>``, ``POST /api/label|undo``."""

    server: LabelServer
    server_version = "toonforge-label"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: one line per request would bury the start-up message."""

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _not_found(self) -> None:
        self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

    def do_GET(self) -> None:
        """The page, the state or one image."""
        path = urlsplit(self.path).path
        session = self.server.session
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
        elif path == "/api/state":
            self._json(HTTPStatus.OK, session.state())
        elif path.startswith("/image/"):
            self._image(path.removeprefix("/image/"))
        else:
            self._not_found()

    def _image(self, rest: str) -> None:
        folder, _, encoded_id = rest.partition("/")
        image = self.server.session.image_path(folder, unquote(encoded_id))
        if image is None:
            self._not_found()
            return
        try:
            body = image.read_bytes()
        except OSError:
            self._not_found()
            return
        content_type = CONTENT_TYPES.get(image.suffix.lower(), "application/octet-stream")
        self._send(HTTPStatus.OK, body, content_type)

    def do_POST(self) -> None:
        """A decision or an undo, as JSON."""
        path = urlsplit(self.path).path
        if path not in ("/api/label", "/api/undo"):
            self._not_found()
            return
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type != "application/json":
            self._json(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, {"error": "send application/json"})
            return
        length = content_length(self.headers.get("Content-Length"))
        if length is None:
            self.close_connection = True
            self._json(HTTPStatus.BAD_REQUEST, {"error": "bad Content-Length"})
            return
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "body too large"})
            return
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except (ValueError, RecursionError):
            self._json(HTTPStatus.BAD_REQUEST, {"error": "body is not JSON"})
            return
        session = self.server.session
        if path == "/api/undo":
            self._json(HTTPStatus.OK, session.undo())
            return
        if not isinstance(body, dict):
            self._json(HTTPStatus.BAD_REQUEST, {"error": "send an object {id, label}"})
            return
        try:
            status, payload = session.label(str(body.get("id", "")), str(body.get("label", "")))
        except OSError as exc:
            # A full disk or a file made read-only meanwhile: one line here, the reason there.
            message = f"cannot write {session.log.path} ({exc.strerror}); free space or fix it"
            print(f"error: {message}", file=sys.stderr, flush=True)
            self._json(HTTPStatus.INSUFFICIENT_STORAGE, {"error": message})
            return
        self._json(status, payload)


def content_length(header: str | None) -> int | None:
    """The request's body size from its ``Content-Length`` (0 when absent), or None when the
    header is not a non-negative whole number."""
    if header is None or not header.strip():
        return 0
    text = header.strip()
    return int(text) if text.isdigit() else None


def check_port(value: Any) -> int:
    """``port`` as an int in 0..65535 (0: any free port), else a one-line :class:`UserError`."""
    try:
        port = int(str(value).strip())
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise UserError(f"port={value} is not a port number; use 0-65535 (0 picks a free one)")
    return port


class LabelServer(ThreadingHTTPServer):
    """A threaded HTTP server on 127.0.0.1 holding one ``LabelSession``."""

    daemon_threads = True

    def __init__(self, session: LabelSession, port: int = 0) -> None:
        self.session = session
        try:
            super().__init__((HOST, port), LabelHandler)
        except OSError as exc:
            raise UserError(
                f"cannot listen on {HOST}:{port} ({exc.strerror}); pick another port=..."
            ) from exc

    @property
    def url(self) -> str:
        """The page's address."""
        return f"http://{HOST}:{self.server_address[1]}/"


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR / "cleaner"), config_name="label")
def main(cfg: DictConfig) -> None:
    """Serve the labelling page until Ctrl+C."""
    try:
        session = LabelSession(cfg.pairs, cfg.labels, side=cfg.side, target=int(cfg.target))
        server = LabelServer(session, check_port(cfg.port))
    except UserError as err:
        fail(str(err))
    except MissingMandatoryValue as err:
        fail(f"{err.full_key} is not set: add {err.full_key}=... to the command")
    state = session.state()
    print(
        f"labelling {state['total']} pairs ({state['decided']} done) at {server.url}\n"
        f"labels go to {session.log.path}; press Ctrl+C to stop (nothing is lost)",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        session.close()
    print("stopped; run the same command to continue")


if __name__ == "__main__":
    main()
