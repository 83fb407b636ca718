# Fashion Hub: one image for the API (`hub serve`), the workers (`hub worker`) and `hub migrate`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    ANONYMIZED_TELEMETRY=False \
    HUB_HOME=/data

WORKDIR /app
# CPU torch from PyTorch's own index: the default PyPI wheel is a multi-GB CUDA build.
RUN pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY hub ./hub
RUN pip install . \
    && useradd --create-home --uid 10001 hub \
    && mkdir -p /data && chown hub /data
USER hub
# `--build-arg HUB_PRELOAD_MODEL=patrickjohncyh/fashion-clip` puts the model in the image (no download at start)
ARG HUB_PRELOAD_MODEL=""
RUN if [ -n "$HUB_PRELOAD_MODEL" ]; then hub model download "$HUB_PRELOAD_MODEL"; fi
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=5 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health').status != 200)"
CMD ["hub", "serve", "--host", "0.0.0.0", "--port", "8000"]
