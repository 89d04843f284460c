"""The Telegram bot, offline: a recording session answers the Bot API, updates go through the
dispatcher as in production (only the network is replaced)."""

from __future__ import annotations

import asyncio
import io
import logging
import socket
import struct
import threading
import time
import zlib
from collections.abc import AsyncGenerator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.session.base import BaseSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.methods import GetFile, SendMediaGroup, SendMessage, SendPhoto
from aiogram.types import Chat, File, Message, Update
from hydra import compose, initialize_config_dir
from PIL import Image

from src.common.errors import UserError
from src.common.fileio import atomic_write_json
from src.common.integrity import output_checksums
from src.common.stage import CONFIG_DIR
from src.serve import bot as bot_module
from src.serve.bot import (
    BotSettings,
    CartoonBot,
    RateLimiter,
    cartoonizer_engines,
    read_token,
    serve,
    settings_from,
    token_redacted_logs,
)
from tests.conftest import run_module
from tests.serve.conftest import PHOTOS

TOKEN = "123456:TEST-token-for-offline-tests"


class RecordingSession(BaseSession):
    """Records every Bot API request and answers it; files are served from ``files``."""

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__()
        self.files = files
        self.requests: list[Any] = []

    async def make_request(self, bot: Bot, method: Any, timeout: int | None = None) -> Any:
        self.requests.append(method)
        if isinstance(method, GetFile):
            data = self.files[method.file_id]
            return File(
                file_id=method.file_id,
                file_unique_id=method.file_id,
                file_size=len(data),
                file_path=f"photos/{method.file_id}",
            )
        chat = Chat(id=int(getattr(method, "chat_id", 1)), type="private")
        sent = Message(message_id=len(self.requests), date=datetime.now(), chat=chat)
        if isinstance(method, SendMediaGroup):
            return [sent for _ in method.media]
        return sent

    async def stream_content(
        self,
        url: str,
        headers: dict[str, Any] | None = None,
        timeout: int = 30,
        chunk_size: int = 65536,
        raise_for_status: bool = True,
    ) -> AsyncGenerator[bytes, None]:
        data = self.files[url.rsplit("/", 1)[-1]]
        for start in range(0, len(data), chunk_size):
            yield data[start : start + chunk_size]

    async def close(self) -> None:
        pass

    def sent(self, kind: type) -> list[Any]:
        return [r for r in self.requests if isinstance(r, kind)]

    def texts(self) -> list[str]:
        return [r.text for r in self.sent(SendMessage)]


def photo_update(update_id: int, user: int, file_id: str, size: int, width: int = 384) -> dict:
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": 0,
            "chat": {"id": user, "type": "private"},
            "from": {"id": user, "is_bot": False, "first_name": "Test"},
            "photo": [
                {
                    "file_id": file_id,
                    "file_unique_id": file_id,
                    "width": width,
                    "height": width,
                    "file_size": size,
                }
            ],
        },
    }


def document_update(update_id: int, user: int, file_id: str, size: int, mime: str) -> dict:
    update = photo_update(update_id, user, file_id, size)
    del update["message"]["photo"]
    update["message"]["document"] = {
        "file_id": file_id,
        "file_unique_id": file_id,
        "file_size": size,
        "mime_type": mime,
        "file_name": f"{file_id}.bin",
    }
    return update


def text_update(update_id: int, user: int, text: str) -> dict:
    update = photo_update(update_id, user, "x", 1)
    del update["message"]["photo"]
    update["message"]["text"] = text
    if text.startswith("/"):
        command = text.split()[0]
        update["message"]["entities"] = [
            {"type": "bot_command", "offset": 0, "length": len(command)}
        ]
    return update


async def feed(cartoon_bot: CartoonBot, session: RecordingSession, *updates: dict) -> None:
    """Feed ``updates`` to the bot's dispatcher concurrently, as polling with tasks does."""
    bot = Bot(TOKEN, session=session)
    dispatcher = cartoon_bot.dispatcher()
    await asyncio.gather(
        *(
            dispatcher.feed_update(bot, Update.model_validate(u, context={"bot": bot}))
            for u in updates
        )
    )


def decoded(upload: Any) -> Image.Image:
    image = Image.open(io.BytesIO(upload.data))
    image.load()
    return image


@pytest.fixture
def files() -> dict[str, bytes]:
    return {
        "astronaut": (PHOTOS / "astronaut.jpg").read_bytes(),
        "two_faces": (PHOTOS / "two_faces.jpg").read_bytes(),
        "notimage": b"%PDF-1.4 definitely not a picture",
    }


@pytest.fixture
def identity_bot(identity_generator: Path) -> CartoonBot:
    settings = BotSettings(models={"identity": str(identity_generator)})
    return CartoonBot(settings, cartoonizer_engines(settings))


def test_a_photo_is_answered_with_a_cartoon(identity_bot: CartoonBot, files: dict) -> None:
    session = RecordingSession(files)
    asyncio.run(feed(identity_bot, session, photo_update(1, 7, "astronaut", 30_000)))
    (sent,) = session.sent(SendPhoto)
    assert sent.chat_id == 7
    assert decoded(sent.photo).size == (256, 256)


def test_two_faces_come_back_as_an_album(identity_bot: CartoonBot, files: dict) -> None:
    session = RecordingSession(files)
    asyncio.run(feed(identity_bot, session, photo_update(1, 7, "two_faces", 60_000, 712)))
    (album,) = session.sent(SendMediaGroup)
    assert len(album.media) == 2
    assert all(decoded(item.media).size == (256, 256) for item in album.media)


def test_no_face_and_not_an_image(identity_bot: CartoonBot, files: dict) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (200, 150), (120, 160, 200)).save(buffer, format="PNG")
    files["sky"] = buffer.getvalue()
    session = RecordingSession(files)
    asyncio.run(
        feed(
            identity_bot,
            session,
            document_update(1, 7, "sky", len(files["sky"]), "image/png"),
            document_update(2, 8, "notimage", 40, "application/pdf"),
            document_update(3, 9, "notimage", 40, "image/jpeg"),
        )
    )
    texts = session.texts()
    assert any("no face" in t for t in texts)
    assert any("not an image" in t for t in texts)
    assert any("not an image I can read" in t for t in texts)
    assert not session.sent(SendPhoto)


def test_too_large_is_refused_before_downloading(identity_bot: CartoonBot, files: dict) -> None:
    session = RecordingSession(files)
    asyncio.run(
        feed(
            identity_bot,
            session,
            photo_update(1, 7, "astronaut", 25 * 2**20),
            photo_update(2, 8, "astronaut", 30_000, width=10_000),
        )
    )
    assert not session.sent(GetFile), "nothing was downloaded"
    texts = session.texts()
    assert any("the limit is 20 MB" in t for t in texts)
    assert any("megapixels" in t for t in texts)


def test_pixel_limit_is_checked_from_the_header(identity_bot: CartoonBot, files: dict) -> None:
    identity_bot.settings.max_pixels = 100_000
    session = RecordingSession(files)
    asyncio.run(
        feed(identity_bot, session, document_update(1, 7, "two_faces", 65_000, "image/jpeg"))
    )
    assert "megapixels" in session.texts()[0] and not session.sent(SendPhoto)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` pixels and which holds no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def test_a_decompression_bomb_gets_the_megapixel_answer(
    identity_bot: CartoonBot, files: dict
) -> None:
    files["bomb"] = png_header_only(30_000, 30_000)
    session = RecordingSession(files)
    asyncio.run(
        feed(identity_bot, session, document_update(1, 7, "bomb", len(files["bomb"]), "image/png"))
    )
    assert "megapixels, the limit" in session.texts()[0] and not session.sent(SendPhoto)


class FailingDownloads(RecordingSession):
    """Downloads fail as aiohttp's do: the message holds the file URL, token included."""

    async def stream_content(self, url: str, *args: Any, **kwargs: Any) -> AsyncGenerator[bytes]:
        raise RuntimeError(f"404, message='Not Found', url='{url}'")
        yield b""


def test_a_failed_download_never_logs_the_token(
    identity_bot: CartoonBot, files: dict, caplog: pytest.LogCaptureFixture
) -> None:
    session = FailingDownloads(files)
    with caplog.at_level(logging.ERROR), token_redacted_logs(TOKEN):
        asyncio.run(feed(identity_bot, session, photo_update(1, 7, "astronaut", 30_000)))
    assert "/file/bot<BOT_TOKEN>/photos/astronaut" in caplog.text, "the failure was logged"
    assert TOKEN not in caplog.text
    assert any("something went wrong" in t for t in session.texts())


class SlowEngine:
    """Counts how many inferences run at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.calls = 0

    def __call__(self, photo: np.ndarray) -> tuple[list[np.ndarray], list[str]]:
        with self.lock:
            self.running += 1
            self.calls += 1
            self.peak = max(self.peak, self.running)
        time.sleep(0.1)
        with self.lock:
            self.running -= 1
        return [np.zeros((16, 16, 3), np.uint8)], []


def test_many_users_at_once_respect_the_semaphore_and_the_queue(files: dict) -> None:
    engine = SlowEngine()
    loads = []

    def slow_load(name: str) -> SlowEngine:
        loads.append(name)
        time.sleep(0.05)
        return engine

    settings = BotSettings(models={"slow": "-"}, max_concurrent=2, max_queue=3)
    cartoon_bot = CartoonBot(settings, slow_load)
    session = RecordingSession(files)
    updates = [photo_update(i, 100 + i, "astronaut", 30_000) for i in range(8)]
    asyncio.run(feed(cartoon_bot, session, *updates))
    assert loads == ["slow"], "two worker threads never load the same generator twice"
    assert engine.peak == 2
    assert engine.calls == 5 and len(session.sent(SendPhoto)) == 5
    assert sum("busy" in t for t in session.texts()) == 3


def test_rate_limit_per_user(files: dict) -> None:
    engine = SlowEngine()
    settings = BotSettings(models={"slow": "-"}, rate_limit=2, rate_window_s=60)
    session = RecordingSession(files)
    cartoon_bot = CartoonBot(settings, lambda name: engine)
    asyncio.run(
        feed(cartoon_bot, session, *(photo_update(i, 5, "astronaut", 30_000) for i in range(3)))
    )
    asyncio.run(feed(cartoon_bot, session, photo_update(9, 6, "astronaut", 30_000)))
    assert engine.calls == 3
    assert sum("Slow down" in t for t in session.texts()) == 1
    clock = [0.0]
    limiter = RateLimiter(1, 10, clock=lambda: clock[0])
    assert limiter.wait_time(1) == 0 and limiter.wait_time(1) == 10
    clock[0] = 10.0
    assert limiter.wait_time(1) == 0


def test_a_busy_answer_does_not_count_against_the_rate_limit(files: dict) -> None:
    engine = SlowEngine()
    settings = BotSettings(
        models={"slow": "-"}, max_concurrent=1, max_queue=0, rate_limit=2, rate_window_s=60
    )
    session = RecordingSession(files)
    cartoon_bot = CartoonBot(settings, lambda name: engine)
    asyncio.run(
        feed(cartoon_bot, session, *(photo_update(i, 5, "astronaut", 30_000) for i in range(3)))
    )
    assert sum("busy" in t for t in session.texts()) == 2
    asyncio.run(feed(cartoon_bot, session, photo_update(9, 5, "astronaut", 30_000)))
    assert engine.calls == 2 and not any("Slow down" in t for t in session.texts())


def test_commands_allowlist_and_a_failing_update(files: dict) -> None:
    def broken(photo: np.ndarray) -> tuple[list[np.ndarray], list[str]]:
        raise RuntimeError("generator exploded")

    settings = BotSettings(models={"a": "-", "b": "-"}, allowlist=frozenset({5}))
    cartoon_bot = CartoonBot(settings, lambda name: broken)
    session = RecordingSession(files)

    async def scenario() -> None:
        await feed(
            cartoon_bot,
            session,
            text_update(1, 5, "/start"),
            text_update(2, 5, "/model b"),
            text_update(3, 6, "/start"),
        )
        await feed(cartoon_bot, session, photo_update(4, 5, "astronaut", 30_000))
        await feed(cartoon_bot, session, text_update(5, 5, "/model"))

    asyncio.run(scenario())
    texts = session.texts()
    assert texts[0].startswith("Hi!") or texts[1].startswith("Hi!")
    assert "Now using b." in texts
    assert "Sorry, this bot is private." in texts
    assert any("something went wrong" in t for t in texts), "the failure was answered"
    assert "Yours: b" in texts[-1], "the bot kept going after the failure"
    assert cartoon_bot.pending == 0


def test_token_is_required_and_never_echoed() -> None:
    with pytest.raises(UserError, match="BOT_TOKEN is not set"):
        read_token({})
    with pytest.raises(UserError) as bad:
        read_token({"BOT_TOKEN": "secret-value-without-colon"})
    assert "secret-value" not in str(bad.value)
    assert read_token({"BOT_TOKEN": TOKEN}) == TOKEN


def test_settings_from_the_config_and_their_checks() -> None:
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("bot", ["bot.allowlist=[5,6]", "+bot.models.p2c=/m/p2c.pt"])
    settings = settings_from(cfg)
    assert settings.allowlist == {5, 6} and settings.model_names == ["p2c", "pix2pix"]
    assert settings.max_download_bytes == 20 * 2**20
    with pytest.raises(UserError, match="default_model=nope"):
        CartoonBot(BotSettings(models={"a": "-"}, default_model="nope"), lambda name: None)


@pytest.mark.slow
def test_startup_without_token_is_a_clear_error(tmp_path: Path) -> None:
    result = run_module("src.serve.bot", f"paths.root_dir={tmp_path}", env={"BOT_TOKEN": ""})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: BOT_TOKEN is not set")


class TimedSession(RecordingSession):
    """Also records when each request was made."""

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__(files)
        self.times: list[float] = []

    async def make_request(self, bot: Bot, method: Any, timeout: int | None = None) -> Any:
        self.times.append(time.monotonic())
        return await super().make_request(bot, method, timeout)


def test_help_answers_while_large_photos_decode(
    files: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_decode = bot_module.decode_photo

    def slow_decode(data: bytes, max_pixels: int) -> np.ndarray:
        time.sleep(1.0)  # a 40-megapixel PNG takes seconds
        return real_decode(data, max_pixels)

    monkeypatch.setattr(bot_module, "decode_photo", slow_decode)
    settings = BotSettings(models={"slow": "-"}, max_concurrent=3)
    cartoon_bot = CartoonBot(settings, lambda name: SlowEngine())
    session = TimedSession(files)
    photos = [photo_update(i, 10 + i, "astronaut", 30_000) for i in range(3)]
    start = time.monotonic()

    async def scenario() -> None:
        decoding = asyncio.create_task(feed(cartoon_bot, session, *photos))
        await asyncio.sleep(0.2)  # the photos are being decoded now
        await feed(cartoon_bot, session, text_update(9, 99, "/help"))
        await decoding

    asyncio.run(scenario())
    (help_at,) = [
        t
        for r, t in zip(session.requests, session.times, strict=True)
        if isinstance(r, SendMessage) and r.chat_id == 99
    ]
    assert help_at - start < 0.7, "the event loop was blocked by decoding"
    assert len(session.sent(SendPhoto)) == 3


def test_a_flood_gets_one_slow_down_then_silence_until_the_window_passes(files: dict) -> None:
    engine = SlowEngine()
    settings = BotSettings(models={"slow": "-"}, rate_limit=5, rate_window_s=60, max_queue=200)
    session = RecordingSession(files)
    cartoon_bot = CartoonBot(settings, lambda name: engine)
    clock = [0.0]
    cartoon_bot.rate.clock = lambda: clock[0]
    flood = [photo_update(i, 5, "astronaut", 30_000) for i in range(100)]
    slow_downs = []

    async def scenario() -> None:
        await feed(cartoon_bot, session, *flood)
        slow_downs.append(sum("Slow down" in t for t in session.texts()))
        clock[0] = 30.0
        await feed(cartoon_bot, session, photo_update(200, 5, "astronaut", 30_000))
        slow_downs.append(sum("Slow down" in t for t in session.texts()))
        clock[0] = 61.0
        await feed(cartoon_bot, session, *flood[:6])
        slow_downs.append(sum("Slow down" in t for t in session.texts()))

    asyncio.run(scenario())
    assert engine.calls == 10
    assert slow_downs == [1, 1, 2], "one answer, silence in the window, one answer after it"


def test_a_changed_generator_is_refused_at_startup(identity_generator: Path) -> None:
    folder = identity_generator.parent
    checksums = output_checksums(folder, [identity_generator.name])
    atomic_write_json(folder / "done.json", {"stage": "pix2pix", "sha256": checksums})
    data = bytearray(identity_generator.read_bytes())
    data[len(data) // 2] ^= 0x10
    identity_generator.write_bytes(bytes(data))
    settings = BotSettings(models={"p": str(identity_generator)})
    with pytest.raises(UserError, match="does not match the SHA-256 that pix2pix recorded"):
        asyncio.run(serve(settings, TOKEN, session=RecordingSession({})))


def test_no_network_at_startup_is_one_line(identity_generator: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    api = TelegramAPIServer.from_base(f"http://127.0.0.1:{closed_port}")
    settings = BotSettings(models={"p": str(identity_generator)})
    with pytest.raises(UserError, match="cannot reach the Telegram Bot API") as err:
        asyncio.run(serve(settings, TOKEN, session=AiohttpSession(api=api)))
    assert TOKEN not in str(err.value) and "\n" not in str(err.value)


def test_degree_command_reaches_inversion_engines(files: dict) -> None:
    calls: list[tuple[str, float | None]] = []

    class DegreeEngine:
        takes_degree = True

        def __call__(self, photo: np.ndarray, degree: float = 1.0):
            calls.append(("inversion", degree))
            return [photo[:8, :8]], []

    def plain(photo: np.ndarray):
        calls.append(("plain", None))
        return [photo[:8, :8]], []

    settings = BotSettings(models={"plain": "-"}, inversions={"toon": {"encoder": "-"}})
    engines = {"toon": DegreeEngine(), "plain": plain}
    cartoon_bot = CartoonBot(settings, engines.__getitem__)
    session = RecordingSession(files)

    async def scenario() -> None:
        await feed(cartoon_bot, session, text_update(1, 5, "/degree"))
        await feed(cartoon_bot, session, text_update(2, 5, "/degree 1.7"))
        await feed(cartoon_bot, session, text_update(3, 5, "/degree 0.25"))
        await feed(cartoon_bot, session, text_update(4, 5, "/model toon"))
        await feed(cartoon_bot, session, photo_update(5, 5, "astronaut", 30_000))
        await feed(cartoon_bot, session, text_update(6, 5, "/model plain"))
        await feed(cartoon_bot, session, photo_update(7, 5, "astronaut", 30_000))

    asyncio.run(scenario())
    texts = session.texts()
    assert texts[0].startswith("Style degree: 1 ")
    assert "from 0 (photo) to 1" in texts[1]
    assert texts[2] == "Style degree set to 0.25."
    assert calls == [("inversion", 0.25), ("plain", None)]
    assert settings.model_names == ["plain", "toon"]
