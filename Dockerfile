# raygate: the platform image (gateway, controller, replicas, planner). Used as the Ray image in KubeRay.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    RAYGATE_RUN_DIR=/var/lib/raygate

# redis-server: the embedded Redis for single-container use (unused when REDIS_URL is set).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/raygate
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY replicas ./replicas
COPY planner ./planner
COPY autoscale ./autoscale
COPY deploy ./deploy
RUN pip install --no-cache-dir . \
    && useradd --create-home --uid 1000 ray \
    && mkdir -p /var/lib/raygate \
    && chown ray:ray /var/lib/raygate

USER 1000
EXPOSE 8000
# Inside a container the gateway must bind beyond loopback to be reachable: that is explicit here.
ENTRYPOINT ["raygate"]
CMD ["up", "--host", "0.0.0.0"]
