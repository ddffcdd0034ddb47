# Image for the healthbook worker and query consumer (docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY domain domain
COPY healthbook healthbook
COPY producers producers
COPY streams streams
COPY consumers consumers
COPY synthetic synthetic
COPY commands commands
# A C compiler only while installing: it builds schemas/_native.c, the worker's hottest byte work.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install --no-cache-dir . \
    && apt-get purge -y gcc libc6-dev && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
USER nobody
ENTRYPOINT ["healthbook"]
