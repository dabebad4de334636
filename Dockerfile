# The API and pre-flight workers: no CUDA, no torch. Entry point: the HTTP API (ftsvc api);
# docker-compose.yml also runs the pre-flight worker and the migrations from this image.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
# The runtime layer (the API) and the pre-flight layer (tokenizers for job pre-flight and
# previews); neither pins torch, so the image stays small.
COPY requirements/runtime.lock requirements/preflight.lock requirements/
RUN pip install -r requirements/runtime.lock -r requirements/preflight.lock

COPY pyproject.toml README.md ./
COPY core core
COPY api api
COPY worker worker
COPY ftsvc ftsvc
COPY migrations migrations
RUN pip install --no-deps . && useradd --create-home ftsvc && mkdir -p /data && chown ftsvc /data
USER ftsvc

ENV FTSVC_DATA_DIR=/data HF_HOME=/data/hf
ENTRYPOINT ["ftsvc"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
