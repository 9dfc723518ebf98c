# syntax=docker/dockerfile:1
# nimctl on NVIDIA GPUs: vLLM's own image, pinned to the release nimctl is built against, with
# nimctl in front. `docker run --gpus all --shm-size=32GB -p 8000:8000 -e NIM_MODEL_PROFILE=...`
FROM vllm/vllm-openai:v0.32.0

# pipefail: the constraints pipeline below must fail the build if `pip list` fails.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV NIM_CACHE_PATH=/opt/nim/.cache \
    NIM_SERVER_PORT=8000 \
    PYTHONUNBUFFERED=1

WORKDIR /opt/nimctl
COPY pyproject.toml README.md ./
COPY nimctl ./nimctl
# vLLM and its dependencies are already in the base image. Installing nimctl must not change
# them, so every package the image has is a constraint, except mistral_common: vLLM 0.32's
# mistral parser breaks with mistral_common >= 1.13, so it is pinned to 1.12.0 (as in the
# pyproject's gpu extra) and checked. uid 1000 may exist already (Ubuntu 24.04 images have it).
RUN python3 -m pip list --format=freeze \
        | grep -viE '^(mistral[-_]common|nimctl)==' > /tmp/base-constraints.txt \
    && python3 -m pip install --no-cache-dir --constraint /tmp/base-constraints.txt \
        "mistral_common==1.12.0" . \
    && rm /tmp/base-constraints.txt \
    && python3 -c "from importlib.metadata import version as v; assert v('mistral_common') == '1.12.0', v('mistral_common')" \
    && if ! getent passwd 1000 > /dev/null; then \
        useradd --uid 1000 --create-home --shell /usr/sbin/nologin nim; \
    fi \
    && mkdir -p /opt/nim/.cache \
    && chown -R 1000:1000 /opt/nim

USER 1000
EXPOSE 8000
VOLUME ["/opt/nim/.cache"]
# Ready, not just live: Docker reports "healthy" once the model is loaded. HTTPS when
# NIM_SSL_MODE asks for TLS (the certificate is not checked: this is loopback).
HEALTHCHECK --interval=10s --timeout=2s --start-period=1800s --retries=3 \
    CMD ["python3", "-c", "import os, ssl, urllib.request as u; tls = (os.environ.get('NIM_SSL_MODE') or 'DISABLED').upper() != 'DISABLED'; u.urlopen(('https' if tls else 'http') + '://127.0.0.1:' + (os.environ.get('NIM_SERVER_PORT') or '8000') + '/v1/health/ready', timeout=2, context=ssl._create_unverified_context() if tls else None)"]
ENTRYPOINT ["nimctl", "serve"]
