# rnnscope: the web app with its bundled models. Build: docker build -t rnnscope .
# Run: docker run -p 8000:8000 -v rnnscope-data:/data rnnscope
# With Ray, for a cluster's server and its nodes (docs/cluster.md):
#   docker build --build-arg EXTRAS=cluster -t rnnscope:cluster .

# Build the wheel: one package, rnnscope, holding app, model, the bundled weights, static/ and templates/ in one file.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY rnnscope ./rnnscope
COPY app ./app
COPY model ./model
COPY static ./static
COPY templates ./templates
RUN pip wheel --no-deps --wheel-dir /wheels .

# Install it like any package: no source tree in the image, the app runs from site-packages.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RNNSCOPE_DATA_DIR=/data

RUN useradd --create-home --uid 1000 rnnscope \
    && mkdir -p /data && chown rnnscope:rnnscope /data

ARG EXTRAS=""
COPY --from=build /wheels /wheels
RUN wheel="$(ls /wheels/*.whl)" && pip install "rnnscope${EXTRAS:+[$EXTRAS]} @ file://$wheel" && rm -rf /wheels

USER rnnscope
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"

# One worker: models and background training live in this process.
CMD ["rnnscope", "serve", "--host", "0.0.0.0", "--port", "8000", "--data-dir", "/data"]
