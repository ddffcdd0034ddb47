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
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT ["healthbook"]
