# syntax=docker/dockerfile:1
# The serving image: MLEM's FastAPI server (gitml.serving.serve) with the packaged model baked in.
# Build context: build/image/, prepared by `make image-context` (locked serving wheels with
# hashes, the project wheel, the MLEM model). On GitHub: `docker build -f Dockerfile build/image`;
# here `make image` builds this same file with buildah on a locally made Debian base.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/venv
# Only the serving dependency group, hash-checked, from wheels in the context: no network,
# no compilers, and no dvc, evidently or test tools in the image. The files are COPYed, not
# bind-mounted, so that their content is part of every builder's layer cache key.
COPY requirements.txt /tmp/requirements.txt
RUN --mount=type=bind,source=wheels,target=/tmp/wheels \
    /opt/venv/bin/pip install --no-index --find-links /tmp/wheels --require-hashes \
        -r /tmp/requirements.txt
# Left out of the image: the dependencies' own test suites (scikit-learn, scipy, numpy, pandas:
# 105 MB of 590, never imported by the server) and pip itself (nothing installs at runtime,
# 16 MB). Their bytecode stays: compiled once here, not by every worker at every start.
RUN find /opt/venv/lib/python3.11/site-packages -depth -type d -name tests -exec rm -rf {} +

# The project's own package apart from its dependencies: a change of code rebuilds this small
# layer, and the runtime image keeps its cached layer of the dependencies (hundreds of MB).
FROM builder AS project
COPY dist/ /tmp/dist/
RUN /opt/venv/bin/pip install --no-index --no-deps --target /opt/project /tmp/dist/*.whl

FROM builder AS dependencies
RUN /opt/venv/bin/python -m pip uninstall --yes --quiet pip

FROM ${BASE_IMAGE} AS runtime
RUN useradd --uid 10001 --user-group --home-dir /app --no-create-home app \
    && install -d -o 10001 -g 10001 /var/lib/gitml/predictions
COPY --from=dependencies /opt/venv /opt/venv
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MLEM_NO_ANALYTICS=true \
    GITML_MODEL_PATH=/app/model/model \
    GITML_HOST=0.0.0.0 \
    GITML_PORT=8080 \
    GITML_METRICS_PORT=9100 \
    GITML_PREDICTION_LOG_DIR=/var/lib/gitml/predictions \
    OMP_NUM_THREADS=1
# OMP_NUM_THREADS=1: parallelism comes from one worker process per core (GITML_WORKERS);
# OpenMP threads inside a predict of a few rows would only contend with the other workers.
# The prediction log (gitml.serving.predlog): mount durable storage here, or it dies with the container.
VOLUME ["/var/lib/gitml/predictions"]
USER 10001:10001
# 8080: the API; 9100: GET /metrics, for Prometheus only (never published through a Service)
EXPOSE 8080 9100
HEALTHCHECK --interval=30s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['GITML_PORT'], timeout=2)"]
ENTRYPOINT ["python", "-m", "gitml", "serve"]
# What changes from release to release comes last, so a release rebuilds only these layers:
# the project's code, the model, and the version and commit.
COPY --from=project /opt/project/ /opt/venv/lib/python3.11/site-packages/
COPY model/ /app/model/
ARG MODEL_VERSION=unversioned
ARG GIT_COMMIT=unknown
# buildah takes a cached LABEL or ENV step whatever the value of the build argument it reads
# (containers/buildah#5501); a RUN that reads them is rebuilt when they change, and all after it.
RUN echo "release ${MODEL_VERSION} (commit ${GIT_COMMIT})"
LABEL org.opencontainers.image.title="gitml-serving" \
      org.opencontainers.image.description="gitml model server (MLEM + FastAPI)" \
      org.opencontainers.image.version="${MODEL_VERSION}" \
      org.opencontainers.image.revision="${GIT_COMMIT}"
ENV GITML_MODEL_VERSION=${MODEL_VERSION}
