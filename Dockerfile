# One image for every deployable; the command picks which (`shulian gateway run`, `shulian ingest run`, ...).
# A factory gateway can be built slimmer with --build-arg EXTRAS=gateway.
FROM python:3.11-slim-bookworm

ARG EXTRAS=all
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY shulian ./shulian
COPY wire ./wire
COPY gateway ./gateway
COPY ingest ./ingest
COPY monitoring ./monitoring
COPY simulators ./simulators
COPY device_profiles ./device_profiles
COPY deploy ./deploy
RUN pip install --no-cache-dir ".[${EXTRAS}]" \
 && useradd --system --create-home --home-dir /var/lib/shulian shulian \
 && mkdir -p /var/lib/shulian && chown shulian /var/lib/shulian

USER shulian
WORKDIR /var/lib/shulian
ENTRYPOINT ["shulian"]
CMD ["--help"]
