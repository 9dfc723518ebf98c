# syntax=docker/dockerfile:1
# nimctl on NVIDIA GPUs: vLLM's own image, pinned to the release nimctl is built against, with
# nimctl in front. `docker run --gpus all --shm-size=32GB -p 8000:8000 -e NIM_MODEL_PROFILE=...`
FROM vllm/vllm-openai:v0.32.0

ENV NIM_CACHE_PATH=/opt/nim/.cache \
    NIM_SERVER_PORT=8000 \
    PYTHONUNBUFFERED=1

WORKDIR /opt/nimctl
COPY pyproject.toml README.md ./
COPY nimctl ./nimctl
COPY profiles ./profiles
# vLLM is already in the base image; install nimctl's own dependencies only.
RUN python3 -m pip install --no-cache-dir . \
    && useradd --uid 1000 --create-home --shell /usr/sbin/nologin nim \
    && mkdir -p /opt/nim/.cache \
    && chown -R 1000:1000 /opt/nim

USER 1000
EXPOSE 8000
VOLUME ["/opt/nim/.cache"]
HEALTHCHECK --interval=10s --timeout=2s --start-period=600s --retries=3 \
    CMD python3 -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"NIM_SERVER_PORT\", \"8000\")}/v1/health/ready', timeout=2)"
ENTRYPOINT ["nimctl", "serve"]
