"""``python -m src.serve.web``: a Gradio page that cartoonizes uploaded or webcam photos.

Pick one of the configured generators (``web.models``, as the bot's ``/model``), give a photo,
get each face's cartoon, the photo with the cartoons pasted back, and the PNGs to download. The
same engine as ``cartoonize`` and the bot (``src.serve.engine.Cartoonizer``), with the bot's
limits: the pixel count read from the image header before decoding, faces per photo, the
smallest face, inferences at once. Binds 127.0.0.1 unless ``web.host`` says otherwise; nothing
is fetched from the network (no analytics, system fonts). Settings: ``configs/web.yaml``.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf
from PIL import Image, ImageOps, UnidentifiedImageError

from src.common.errors import UserError
from src.common.stage import CONFIG_DIR, fail

TITLE = "toonforge: photos to cartoons"
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]
MONO_FONTS = ["ui-monospace", "monospace"]


@dataclass
class WebSettings:
    """The page's generators, limits and address (see ``configs/web.yaml``)."""

    models: dict[str, str]
    default_model: str | None = None
    runtime: str = "torch"
    max_pixels: int = 40_000_000
    max_faces: int = 10
    min_face: int = 48
    max_concurrent: int = 1
    max_queue: int = 8
    host: str = "127.0.0.1"
    port: int | None = None
    detector: dict[str, Any] = field(default_factory=lambda: {"name": "auto", "options": {}})

    @property
    def model_names(self) -> list[str]:
        """The configured generators' names, sorted."""
        return sorted(self.models)

    def first_model(self) -> str:
        """``default_model``, or the first name in sorted order."""
        return self.default_model or self.model_names[0]


def settings_from(cfg: DictConfig) -> WebSettings:
    """``WebSettings`` from the ``web`` config node, every generator file checked."""
    node = OmegaConf.to_container(cfg.web, resolve=True)
    assert isinstance(node, dict)
    models = {str(k): str(v) for k, v in (node.pop("models") or {}).items() if v}
    unknown = set(node) - set(WebSettings.__dataclass_fields__)
    if unknown:
        raise UserError(f"web: unknown settings {sorted(unknown)}; see configs/web.yaml")
    settings = WebSettings(models=models, **node)
    if not models:
        raise UserError("web: no generators configured; set web.models.NAME=/path/generator.pt")
    for name, path in models.items():
        if not os.path.isfile(path):
            raise UserError(f"web.models.{name}={path} does not exist; fix the path")
    if settings.default_model and settings.default_model not in models:
        raise UserError(f"web.default_model={settings.default_model} is not in web.models")
    return settings


class WebDemo:
    """The page's work: load generators on first use, check limits, cartoonize, write PNGs."""

    def __init__(self, settings: WebSettings, out_dir: str | os.PathLike[str] | None = None):
        self.settings = settings
        self.out_dir = Path(out_dir or tempfile.mkdtemp(prefix="toonforge-web-"))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.engines: dict[str, Any] = {}
        self._loading = threading.Lock()
        self._detector: Any = None

    def engine(self, name: str) -> Any:
        """The ``Cartoonizer`` of generator ``name`` (loaded once)."""
        from src.faces import make_detector
        from src.serve.engine import Cartoonizer, load_runner

        if name not in self.settings.models:
            raise UserError(f"unknown model '{name}'; pick one of {self.settings.model_names}")
        with self._loading:
            if self._detector is None:
                detector = self.settings.detector
                self._detector = make_detector(
                    str(detector.get("name", "auto")), **(detector.get("options") or {})
                )
            if name not in self.engines:
                path = self.settings.models[name]
                onnx_dir = Path(path).resolve().parent / "onnx_cache"
                runner = load_runner(path, self.settings.runtime, onnx_dir=onnx_dir)
                self.engines[name] = Cartoonizer(
                    runner,
                    self._detector,
                    min_face=self.settings.min_face,
                    max_faces=self.settings.max_faces,
                )
        return self.engines[name]

    def read_photo(self, path: str | os.PathLike[str] | None) -> np.ndarray:
        """The uploaded photo as RGB, upright; its size checked from the header first."""
        if not path:
            raise UserError("give a photo first (upload one or use the webcam)")
        try:
            with Image.open(path) as image:
                width, height = image.size
                if width * height > self.settings.max_pixels:
                    raise UserError(
                        f"the photo has {width * height / 1e6:.1f} megapixels; the limit is "
                        f"{self.settings.max_pixels / 1e6:.1f}"
                    )
                return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
        except (UnidentifiedImageError, OSError) as err:
            raise UserError("that file is not an image this page can read") from err

    def cartoonize(
        self, path: str | os.PathLike[str] | None, model: str
    ) -> tuple[list[np.ndarray], np.ndarray | None, list[str], str]:
        """Cartoon faces, the pasted photo, the PNG files to download and a status line."""
        photo = self.read_photo(path)
        start = time.perf_counter()
        result = self.engine(model)(photo, paste_back=True)
        seconds = time.perf_counter() - start
        skipped = "".join(f"; skipped: {s.reason}" for s in result.skipped)
        if not result.cartoons:
            return [], None, [], f"No face found in that photo{skipped}. Try a clear frontal one."
        folder = Path(tempfile.mkdtemp(dir=self.out_dir))
        files = []
        for index, cartoon in enumerate(result.cartoons):
            files.append(folder / f"cartoon_face{index}.png")
            Image.fromarray(cartoon).save(files[-1])
        files.append(folder / "cartoon_pasted.png")
        Image.fromarray(result.pasted).save(files[-1])
        count = len(result.cartoons)
        status = f"{count} face{'s' if count > 1 else ''} in {seconds:.2f} s with {model}{skipped}"
        return result.cartoons, result.pasted, [str(f) for f in files], status


def build_app(demo: WebDemo) -> Any:
    """The Gradio Blocks page around ``demo``."""
    import gradio as gr

    settings = demo.settings

    def run(path: str | None, model: str) -> tuple[Any, ...]:
        try:
            return demo.cartoonize(path, model)
        except UserError as err:
            raise gr.Error(str(err)) from None

    with gr.Blocks(title=TITLE, analytics_enabled=False) as app:
        gr.Markdown(f"# {TITLE}\nUpload a photo with faces or take one with the webcam.")
        with gr.Row():
            photo = gr.Image(
                sources=["upload", "webcam"], type="filepath", label="Photo", elem_id="photo"
            )
            with gr.Column():
                model = gr.Dropdown(
                    settings.model_names,
                    value=settings.first_model(),
                    label="Model",
                    elem_id="model",
                )
                button = gr.Button("Cartoonize", variant="primary", elem_id="run")
                status = gr.Markdown(elem_id="status")
        with gr.Row():
            faces = gr.Gallery(label="Cartoon faces", elem_id="faces", format="png", columns=4)
            pasted = gr.Image(label="Pasted back", elem_id="pasted", format="png")
        files = gr.File(label="Download", file_count="multiple", elem_id="files")
        button.click(
            run,
            [photo, model],
            [faces, pasted, files, status],
            concurrency_limit=settings.max_concurrent,
        )
    return app


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="web")
def main(cfg: DictConfig) -> None:
    """Entry point of ``python -m src.serve.web``."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        settings = settings_from(cfg)
        demo = WebDemo(settings)
        app = build_app(demo)
    except UserError as err:
        fail(str(err))
    import gradio as gr

    theme = gr.themes.Default(font=SYSTEM_FONTS, font_mono=MONO_FONTS)
    app.queue(max_size=settings.max_queue).launch(
        server_name=settings.host, server_port=settings.port, theme=theme, ssr_mode=False
    )


if __name__ == "__main__":
    main()
