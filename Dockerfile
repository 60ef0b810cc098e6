# The stream worker. `docker compose up` (docker-compose.yml) runs it against Kafka + a schema registry;
# alone: docker run -e KAFKA_BOOTSTRAP_SERVERS=host:9092 -e NOMENCLATURE_BROKER_FLAVOR=kafka IMAGE
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# dependencies first, so that a code change does not reinstall them
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt \
    # navec's embeddings ship in the natasha wheel, whose pymorphy2 dependency breaks on Python >= 3.11
    && pip install --no-deps natasha==1.6.0

COPY . .
RUN pip install --no-deps . \
    && useradd --system --uid 10001 --create-home --shell /usr/sbin/nologin app \
    && mkdir -p /data /models \
    && chown app:app /data /models

# Local state (RocksDB tables, caches) lives under /data: one volume per worker. Models live under
# NOMENCLATURE_MODELS_DIR (default /data/models), which the workers of one app must share (compose: /models).
# Inside a container the web server must listen beyond loopback.
ENV NOMENCLATURE_DATA_DIR=/data \
    NOMENCLATURE_WEB_HOST=0.0.0.0
VOLUME ["/data"]
EXPOSE 6066
USER app

ENTRYPOINT ["nomenclature"]
CMD ["worker", "--train-if-missing"]
