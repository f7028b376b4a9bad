# syntax=docker/dockerfile:1
# The readmit Prefect worker: the project, its locked dependencies and its data, so the flows of
# prefect.yaml run in the worker's own container (process work pool). Used by
# deployments/compose.yaml (services `worker` and `deploy`) and deployments/k8s/worker.yaml.
#
# Build from the project root (the context must be the repository, not this folder):
#   docker build -f deployments/docker/worker.Dockerfile -t readmit/worker:0.1.0 .
# worker.Dockerfile.dockerignore beside this file keeps .venv, .run, .bentoml, ... out of the
# context (BuildKit reads <Dockerfile>.dockerignore before the root .dockerignore).
FROM python:3.11-slim

# Analytics off: the worker runs offline-capable tools that would otherwise phone home.
# OMP_WAIT_POLICY: XGBoost's OpenMP threads spin while idle by default (~6x slower on few cores).
# READMIT_PROJECT_DIR: prefect.yaml's pull step runs each flow from this directory.
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OMP_WAIT_POLICY=PASSIVE \
    GX_ANALYTICS_ENABLED=false \
    WHYLOGS_NO_ANALYTICS=1 \
    BENTOML_DO_NOT_TRACK=true \
    DO_NOT_TRACK=true \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    READMIT_PROJECT_DIR=/opt/readmit

# A fixed non-root uid, so Kubernetes' runAsUser/fsGroup can match it.
RUN groupadd --gid 10001 readmit \
    && useradd --uid 10001 --gid readmit --create-home --shell /usr/sbin/nologin readmit

WORKDIR /opt/readmit

# Dependencies first, in their own layer: rebuilt when the lock changes, not on every code edit.
# The lock pins uv too (bentoml build locks with it); install that exact uv, then the lock.
COPY requirements.lock ./
RUN pip install "uv==$(sed -n 's/^uv==//p' requirements.lock)" \
    && uv pip install --system --no-cache -r requirements.lock

# The project, installed without dependencies (all are in the lock). Editable, as `make install`
# does: readmit.settings.PROJECT_ROOT is then /opt/readmit, where the data, validation suites,
# bento definition and prefect.yaml are.
COPY pyproject.toml README.md prefect.yaml ./
COPY src/ src/
COPY flows/ flows/
COPY bentos/ bentos/
COPY validations/ validations/
COPY data/ data/
RUN uv pip install --system --no-cache --no-deps -e . \
    && mkdir -p .bentoml artifacts .run \
    && chown -R readmit:readmit /opt/readmit

# `readmit-deploy`: create the work pool if missing, then `prefect --no-prompt deploy --all`.
COPY deployments/docker/deploy.sh /usr/local/bin/readmit-deploy
RUN chmod 0755 /usr/local/bin/readmit-deploy

USER readmit

# --with-healthcheck serves GET /health on :8080 (PREFECT_WORKER_WEBSERVER_PORT): healthy while
# the worker keeps polling the server. Compose's healthcheck and the Kubernetes probes use it.
EXPOSE 8080
CMD ["prefect", "worker", "start", "--pool", "readmit-process", "--type", "process", "--with-healthcheck"]
