"""``python -m src.serve.bot``: a Telegram bot that answers face photos with cartoon faces.

Long polling with aiogram 3. The token comes from the ``BOT_TOKEN`` environment variable and is
never logged or echoed. A photo, or an image sent as a file, is answered with its cartoon faces
(one photo, or an album for several), or a clear message when there is no face or no image.

Guards, all checked before any work: an optional allowlist of user ids; the download size
(Telegram lets bots download at most 20 MB) and the pixel count (read from the header before
decoding); a per-user rate limit; a bounded queue (a busy message beyond it). Inference runs off
the event loop (``asyncio.to_thread``) behind a semaphore; a failing update is logged and
answered with an apology, and never stops the bot. Settings: ``configs/bot.yaml``.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import hydra
import numpy as np
from aiogram import Bot, Dispatcher, F, Router
from aiogram.client.session.base import BaseSession
from aiogram.exceptions import TelegramNetworkError, TelegramUnauthorizedError
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.types import BufferedInputFile, ErrorEvent, InputMediaPhoto, Message
from aiogram.utils.token import TokenValidationError, validate_token
from hydra import compose
from omegaconf import DictConfig, OmegaConf
from PIL import Image, ImageOps, UnidentifiedImageError

from src.common.errors import UserError
from src.common.integrity import verify_recorded_sha256
from src.common.params import check_params
from src.common.stage import CONFIG_DIR, fail, searchpath_overrides
from src.encoder.inversion import checked_degree

log = logging.getLogger(__name__)

TELEGRAM_DOWNLOAD_LIMIT = 20 * 1024 * 1024
MAX_ALBUM = 10
HELP = (
    "Send me a photo with faces (as a photo, or as a file for full quality) and I will answer "
    "with a cartoon of each face.\n"
    "/model shows the generators; /model NAME picks one.\n"
    "/degree shows how cartoonish the inversion models draw; /degree 0.5 sets it (0 = photo, "
    "1 = full cartoon).\n"
    "Limits: {max_mb} MB, {max_mp} megapixels, {rate} photos per {window} s."
)


class PhotoEngine(Protocol):
    """What the bot needs from a cartoonizer: uint8 RGB photo -> cartoon faces and skip notes."""

    def __call__(self, photo: np.ndarray) -> tuple[list[np.ndarray], list[str]]:
        """Cartoon faces (uint8 RGB arrays) of ``photo``, and why faces were skipped."""
        ...


@dataclass
class BotSettings:
    """The bot's limits and generators (see ``configs/bot.yaml``)."""

    models: dict[str, str]
    # name -> Toonify-by-inversion model {encoder, base, blended, restyle_steps} (see
    # cartoonize.inversion); these draw at each user's /degree.
    inversions: dict[str, dict[str, Any]] = field(default_factory=dict)
    default_model: str | None = None
    runtime: str = "torch"
    allowlist: frozenset[int] = frozenset()
    max_download_bytes: int = TELEGRAM_DOWNLOAD_LIMIT
    max_pixels: int = 40_000_000
    max_concurrent: int = 1
    max_queue: int = 8
    rate_limit: int = 5
    rate_window_s: float = 60.0
    max_faces: int = MAX_ALBUM
    min_face: int = 48

    @property
    def model_names(self) -> list[str]:
        """The configured generators' names (exported and inversion ones), sorted."""
        return sorted({*self.models, *self.inversions})

    def first_model(self) -> str:
        """The generator a new user gets."""
        if self.default_model:
            return self.default_model
        return self.model_names[0]


class RejectedPhoto(Exception):
    """A photo the bot will not process; the message is what the user is told."""


class RateLimiter:
    """At most ``limit`` events per user in any ``window`` seconds (a sliding window)."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic):
        self.limit = int(limit)
        self.window = float(window)
        self.clock = clock
        self.events: dict[int, deque[float]] = defaultdict(deque)
        self.told_until: dict[int, float] = {}

    def tell_refusal(self, user: int, wait: float) -> bool:
        """True for a user's first refusal; False for the next ones until ``wait`` has passed,
        so a flood of photos gets one "slow down" and then silence."""
        now = self.clock()
        if self.told_until.get(user, float("-inf")) > now:
            return False
        self.told_until[user] = now + wait
        return True

    def wait_time(self, user: int) -> float:
        """0 and the event recorded when ``user`` may go on; else the seconds to wait."""
        now = self.clock()
        events = self.events[user]
        while events and now - events[0] >= self.window:
            events.popleft()
        if len(events) >= self.limit:
            return self.window - (now - events[0])
        events.append(now)
        return 0.0


class TokenRedactor(logging.Filter):
    """Replaces the bot token in every record a handler emits, its traceback included.

    Download errors carry the file URL, and Telegram puts the token in it (``/file/bot<TOKEN>/``).
    """

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = message.replace(self.token, "<BOT_TOKEN>"), ()
        if record.exc_text:
            record.exc_text = record.exc_text.replace(self.token, "<BOT_TOKEN>")
        return True


@contextmanager
def token_redacted_logs(token: str) -> Iterator[None]:
    """While inside, the root logger's handlers (where every logger ends) hide ``token``."""
    redactor = TokenRedactor(token)
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(redactor)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(redactor)


def too_many_pixels(width: int, height: int, max_pixels: int) -> RejectedPhoto:
    """The answer to an image over the pixel limit."""
    return RejectedPhoto(
        f"That image is {width}x{height}; the limit is "
        f"{max_pixels / 1e6:.0f} megapixels. Send a smaller one."
    )


def decode_photo(data: bytes, max_pixels: int) -> np.ndarray:
    """Bytes -> uint8 RGB array, upright; the pixel count is checked before decoding."""
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        # Pillow refuses headers far above its own limit before we can read the size.
        raise RejectedPhoto(
            f"That image has far more than {max_pixels / 1e6:.0f} megapixels, the limit. "
            "Send a smaller one."
        ) from err
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise RejectedPhoto("That file is not an image I can read (JPEG, PNG, WebP).") from err
    if image.width * image.height > max_pixels:
        raise too_many_pixels(image.width, image.height, max_pixels)
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise RejectedPhoto("That image is damaged or truncated; send it again.") from err


def encode_png(pixels: np.ndarray) -> bytes:
    """A uint8 RGB array as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


class CartoonBot:
    """Handlers, limits and per-user state of the bot; ``engine_for(name)`` loads generators."""

    def __init__(self, settings: BotSettings, engine_for: Callable[[str], PhotoEngine]) -> None:
        if not settings.models and not settings.inversions:
            raise UserError("bot: no generators configured; set models.NAME=/path/generator.pt")
        if settings.default_model and settings.default_model not in settings.model_names:
            raise UserError(
                f"bot.default_model={settings.default_model} is not among bot.models "
                f"({', '.join(settings.model_names)}); fix one of them"
            )
        self.settings = settings
        self.engine_for = engine_for
        self.engines: dict[str, PhotoEngine] = {}
        self._loading = threading.Lock()
        self.semaphore = asyncio.Semaphore(settings.max_concurrent)
        self.pending = 0
        self.rate = RateLimiter(settings.rate_limit, settings.rate_window_s)
        self.choice: dict[int, str] = {}
        self.degrees: dict[int, float] = {}
        self.router = self._make_router()
        self._dispatcher: Dispatcher | None = None

    def dispatcher(self) -> Dispatcher:
        """The dispatcher holding this bot's router (made once: a router has one parent)."""
        if self._dispatcher is None:
            self._dispatcher = Dispatcher()
            self._dispatcher.include_router(self.router)
        return self._dispatcher

    def _make_router(self) -> Router:
        """The root router: errors, then the bot's handlers (behind the allowlist, if any)."""
        root = Router(name="root")
        root.errors.register(self.on_error)
        handlers = Router(name="cartoon")
        if self.settings.allowlist:
            handlers.message.filter(F.from_user.id.in_(self.settings.allowlist))
        handlers.message.register(self.on_start, CommandStart())
        handlers.message.register(self.on_help, Command("help"))
        handlers.message.register(self.on_model, Command("model"))
        handlers.message.register(self.on_degree, Command("degree"))
        handlers.message.register(self.on_photo, F.photo)
        handlers.message.register(self.on_photo, F.document)
        handlers.message.register(self.on_other)
        root.include_router(handlers)
        # Reached only by messages the handlers rejected: users outside the allowlist.
        denied = Router(name="denied")
        denied.message.register(self.on_denied)
        root.include_router(denied)
        return root

    def help_text(self) -> str:
        """The /help answer, with the current limits."""
        s = self.settings
        return HELP.format(
            max_mb=s.max_download_bytes // (1024 * 1024),
            max_mp=s.max_pixels // 1_000_000,
            rate=s.rate_limit,
            window=int(s.rate_window_s),
        )

    async def on_denied(self, message: Message) -> None:
        """Users outside the allowlist get one polite line and nothing else."""
        await message.answer("Sorry, this bot is private.")

    async def on_start(self, message: Message) -> None:
        """Greeting and help."""
        await message.answer("Hi! I turn faces in photos into cartoons.\n" + self.help_text())

    async def on_help(self, message: Message) -> None:
        """How to use the bot."""
        await message.answer(self.help_text())

    async def on_model(self, message: Message, command: CommandObject) -> None:
        """``/model`` lists the generators; ``/model NAME`` picks one for this user."""
        user = message.from_user.id if message.from_user else 0
        current = self.choice.get(user, self.settings.first_model())
        name = (command.args or "").strip()
        if not name:
            listed = ", ".join(self.settings.model_names)
            await message.answer(f"Generators: {listed}. Yours: {current}. Pick: /model NAME")
        elif name not in self.settings.model_names:
            await message.answer(
                f"No generator '{name}'. Choose from: {', '.join(self.settings.model_names)}"
            )
        else:
            self.choice[user] = name
            await message.answer(f"Now using {name}.")

    async def on_degree(self, message: Message, command: CommandObject) -> None:
        """``/degree`` shows this user's style degree; ``/degree D`` sets it (0..1)."""
        user = message.from_user.id if message.from_user else 0
        value = (command.args or "").strip()
        if not value:
            current = self.degrees.get(user, 1.0)
            await message.answer(
                f"Style degree: {current:g} (0 = your photo's face, 1 = full cartoon; used by "
                f"the inversion models). Set it: /degree 0.5"
            )
            return
        try:
            degree = checked_degree(value)
        except UserError:
            await message.answer("Give a number from 0 (photo) to 1 (full cartoon): /degree 0.5")
            return
        self.degrees[user] = degree
        await message.answer(f"Style degree set to {degree:g}.")

    async def on_other(self, message: Message) -> None:
        """Anything else: say what the bot understands."""
        await message.answer("Send me a photo with a face, or /help.")

    async def on_error(self, event: ErrorEvent) -> bool:
        """Log a failing update (without its contents) and apologise; the bot keeps running."""
        log.error("update %s failed: %r", event.update.update_id, event.exception)
        message = event.update.message
        if message is not None:
            try:
                await message.answer("Sorry, something went wrong with that one. Try again.")
            except Exception as err:  # the apology itself may fail (network); never re-raise
                log.error("could not send the apology: %r", err)
        return True

    def _check_size(self, file_size: int | None, width: int | None, height: int | None) -> None:
        s = self.settings
        if file_size is not None and file_size > s.max_download_bytes:
            raise RejectedPhoto(
                f"That file is {file_size / 2**20:.1f} MB; the limit is "
                f"{s.max_download_bytes / 2**20:.0f} MB. Send a smaller one."
            )
        if width and height and width * height > s.max_pixels:
            raise too_many_pixels(width, height, s.max_pixels)

    async def on_photo(self, message: Message, bot: Bot) -> None:
        """A photo or a file: check, download, cartoonize off the loop, answer."""
        user = message.from_user.id if message.from_user else 0
        try:
            if message.photo:
                size = message.photo[-1]
                file_id = size.file_id
                self._check_size(size.file_size, size.width, size.height)
            else:
                document = message.document
                assert document is not None
                mime = document.mime_type or ""
                if mime and not mime.startswith("image/"):
                    raise RejectedPhoto("That file is not an image; send a photo (JPEG, PNG).")
                file_id = document.file_id
                self._check_size(document.file_size, None, None)
        except RejectedPhoto as reason:
            await message.answer(str(reason))
            return
        # Busy first, so that a photo turned away for load does not count against its sender.
        if self.pending >= self.settings.max_concurrent + self.settings.max_queue:
            await message.answer("I am busy with other photos right now; try again in a minute.")
            return
        wait = self.rate.wait_time(user)
        if wait > 0:
            if self.rate.tell_refusal(user, wait):
                await message.answer(f"Slow down a little: try again in {wait:.0f} s.")
            return
        self.pending += 1
        try:
            await self._cartoonize(message, bot, file_id, user)
        finally:
            self.pending -= 1

    async def _cartoonize(self, message: Message, bot: Bot, file_id: str, user: int) -> None:
        buffer = await bot.download(file_id)
        assert buffer is not None
        data = buffer.read()
        name = self.choice.get(user, self.settings.first_model())
        try:
            self._check_size(len(data), None, None)
            async with self.semaphore:
                # Decoding a large image takes seconds: off the loop, with the inference.
                degree = self.degrees.get(user, 1.0)
                pngs, skipped = await asyncio.to_thread(self._run, name, data, degree)
        except RejectedPhoto as reason:
            await message.answer(str(reason))
            return
        if not pngs:
            note = f" ({skipped[0]})" if skipped else ""
            await message.answer(f"I found no face in that photo{note}. Try a clear frontal one.")
            return
        files = [BufferedInputFile(png, f"cartoon_{i}.png") for i, png in enumerate(pngs)]
        if len(files) == 1:
            await message.answer_photo(files[0])
        else:
            caption = f"{len(files)} faces"
            media = [
                InputMediaPhoto(media=f, caption=caption if i == 0 else None)
                for i, f in enumerate(files)
            ]
            await message.answer_media_group(media)

    def _run(self, name: str, data: bytes, degree: float = 1.0) -> tuple[list[bytes], list[str]]:
        """In a worker thread: decode ``data``, load (once, even when several threads ask) and
        run the generator ``name`` (at ``degree`` when it is an inversion model), encode the
        cartoons (at most an album's worth) as PNG."""
        pixels = decode_photo(data, self.settings.max_pixels)
        with self._loading:
            if name not in self.engines:
                self.engines[name] = self.engine_for(name)
        engine = self.engines[name]
        if getattr(engine, "takes_degree", False):
            cartoons, skipped = engine(pixels, degree=degree)  # type: ignore[call-arg]
        else:
            cartoons, skipped = engine(pixels)
        return [encode_png(c) for c in cartoons[:MAX_ALBUM]], skipped


def settings_from(cfg: DictConfig) -> BotSettings:
    """``BotSettings`` from the ``bot`` config node."""
    node = OmegaConf.to_container(cfg.bot, resolve=True)
    assert isinstance(node, dict)
    models = {str(k): str(v) for k, v in (node.pop("models") or {}).items() if v}
    inversions = {str(k): dict(v) for k, v in (node.pop("inversions", None) or {}).items() if v}
    allowlist = frozenset(int(u) for u in node.pop("allowlist") or [])
    unknown = set(node) - set(BotSettings.__dataclass_fields__)
    if unknown:
        raise UserError(f"bot: unknown settings {sorted(unknown)}; see configs/bot.yaml")
    return BotSettings(models=models, inversions=inversions, allowlist=allowlist, **node)


def cartoonizer_engines(settings: BotSettings) -> Callable[[str], PhotoEngine]:
    """``name -> engine`` loading ``settings.models[name]`` with the configured runtime."""
    from src.faces import make_detector
    from src.serve.engine import Cartoonizer, load_runner

    def load(name: str) -> PhotoEngine:
        if name in settings.inversions:
            return InversionEngine(settings, name)
        path = settings.models[name]
        onnx_dir = os.path.join(os.path.dirname(os.path.abspath(path)), "onnx_cache")
        runner = load_runner(path, settings.runtime, onnx_dir=onnx_dir)
        engine = Cartoonizer(
            runner,
            make_detector(),
            min_face=settings.min_face,
            max_faces=settings.max_faces,
        )

        def run(photo: np.ndarray) -> tuple[list[np.ndarray], list[str]]:
            result = engine(photo)
            return result.cartoons, [s.reason for s in result.skipped]

        return run

    return load


class InversionEngine:
    """A Toonify-by-inversion cartoonizer drawn at the asking user's degree."""

    takes_degree = True

    def __init__(self, settings: BotSettings, name: str) -> None:
        from src.encoder.toonify import load_inversion_runner
        from src.faces import make_detector
        from src.serve.engine import Cartoonizer

        self.runner = load_inversion_runner(OmegaConf.create(settings.inversions[name]))
        self.engine = Cartoonizer(
            self.runner,
            make_detector("haar"),
            min_face=settings.min_face,
            max_faces=settings.max_faces,
        )
        self.lock = threading.Lock()

    def __call__(
        self, photo: np.ndarray, degree: float = 1.0
    ) -> tuple[list[np.ndarray], list[str]]:
        """Cartoon faces of ``photo`` at ``degree`` (the blend of each degree is cached)."""
        with self.lock:
            self.runner.degree = checked_degree(degree)
            result = self.engine(photo)
        return result.cartoons, [s.reason for s in result.skipped]


def read_token(environ: Mapping[str, str] = os.environ) -> str:
    """``BOT_TOKEN``, checked for its shape; errors never include the token itself."""
    token = environ.get("BOT_TOKEN", "").strip()
    if not token:
        raise UserError(
            "BOT_TOKEN is not set; get a token from @BotFather and export BOT_TOKEN=... "
            "(it is read from the environment only, never from configs or the command line)"
        )
    try:
        validate_token(token)
    except TokenValidationError:
        raise UserError(
            "BOT_TOKEN does not look like a bot token (digits, a colon, then letters); "
            "copy it again from @BotFather"
        ) from None
    return token


async def serve(settings: BotSettings, token: str, session: BaseSession | None = None) -> None:
    """Long-poll Telegram until interrupted (``session``: the Bot API client, aiohttp's by
    default). Each generator is checked first: present, and unchanged since its stage wrote it."""
    for name, path in settings.models.items():
        if not os.path.isfile(path):
            raise UserError(f"bot.models.{name}={path} does not exist; fix the path")
        verify_recorded_sha256(path)
    cartoon_bot = CartoonBot(settings, cartoonizer_engines(settings))
    bot = Bot(token, session=session)
    try:
        with token_redacted_logs(token):
            await check_connection(bot, token)
            log.info("polling; generators: %s", ", ".join(settings.model_names))
            await cartoon_bot.dispatcher().start_polling(bot, handle_signals=False)
    finally:
        await bot.session.close()


async def check_connection(bot: Bot, token: str) -> None:
    """Ask Telegram who the bot is; no network or a refused token is one line, not a traceback."""
    try:
        await bot.get_me()
    except TelegramUnauthorizedError:
        raise UserError(
            "Telegram refused BOT_TOKEN (unauthorized); copy it again from @BotFather"
        ) from None
    except TelegramNetworkError as err:
        reason = str(err.message).replace(token, "<BOT_TOKEN>").splitlines()[0][:160]
        raise UserError(
            f"bot: cannot reach the Telegram Bot API ({reason}); check the network connection "
            "(or a proxy), then start the bot again"
        ) from None


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="bot")
def main(cfg: DictConfig) -> None:
    """Entry point of ``python -m src.serve.bot``."""
    try:
        check_params(cfg, "bot", compose("bot", searchpath_overrides()))
        token = read_token()
        settings = settings_from(cfg)
        if not settings.models and not settings.inversions:
            raise UserError("bot: no generators configured; set bot.models.NAME=/path/generator.pt")
        asyncio.run(serve(settings, token))
    except UserError as err:
        fail(str(err))
    except KeyboardInterrupt:
        log.info("stopped")


if __name__ == "__main__":
    main()
