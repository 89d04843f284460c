# The Telegram bot on CPU: docker compose up -d (see compose.yaml and the README's "The bot in a
# container"). The token comes from the environment (BOT_TOKEN); generators are mounted at
# /models, read-only; nothing is downloaded at run time.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TOONFORGE_ROOT=/home/toonforge

# OpenMP for PyTorch, ONNX Runtime and dlib; GLib for OpenCV.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 toonforge
WORKDIR /app

# CPU-only PyTorch wheels (the default ones bundle CUDA: gigabytes the bot never uses), pinned
# as constraints.txt pins them; then the project and the rest of its dependencies.
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
COPY configs ./configs
RUN pip install --index-url https://download.pytorch.org/whl/cpu \
        "torch==$(sed -n 's/^torch==//p' constraints.txt)" \
        "torchvision==$(sed -n 's/^torchvision==//p' constraints.txt)" \
    && pip install -c constraints.txt -e .

USER 10001:10001
VOLUME ["/models"]
ENTRYPOINT ["python", "-m", "src.serve.bot"]
CMD ["bot.models.pix2pix=/models/pix2pix/generator.pt", "bot.runtime=torch"]
