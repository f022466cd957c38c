# One image for every process of a deployment: the API, the workers and Flower.
#
#   docker build -t celery-orchestrator .
#   docker run --rm celery-orchestrator --help            # the `orchestrator` CLI
#   docker run --rm --entrypoint celery celery-orchestrator -A workers.main flower ...
#
# docker-compose.yml shows the full deployment; docs/scaling.md how to scale it out.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# An unprivileged user; /data is where Flower keeps its state (a volume in compose), so it
# must belong to that user before the volume is first mounted.
RUN groupadd --system --gid 10001 orch \
    && useradd --system --uid 10001 --gid orch --home-dir /app --shell /usr/sbin/nologin orch \
    && mkdir -p /app /data \
    && chown orch:orch /data

WORKDIR /app

# Dependencies first, in their own layer: it is rebuilt only when pyproject.toml changes.
# (The empty packages let pip build the project once; the real code follows below.)
COPY pyproject.toml README.md ./
RUN mkdir orchestrator workers workflows \
    && touch orchestrator/__init__.py workers/__init__.py workflows/__init__.py \
    && pip install . \
    && pip uninstall --yes celery-orchestrator \
    && rm -rf orchestrator workers workflows build ./*.egg-info

COPY orchestrator ./orchestrator
COPY workers ./workers
COPY workflows ./workflows
RUN pip install --no-deps . && rm -rf build ./*.egg-info

USER orch

# 8000: the API (`orchestrator api`); 5555: Flower.
EXPOSE 8000 5555

ENTRYPOINT ["orchestrator"]
CMD ["--help"]
