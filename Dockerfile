# The reconciler daemon: `docker build -t reconciler .`, or `docker compose -f compose/docker-compose.yml up`.
#
# It runs as root: it drives the Docker Engine through /var/run/docker.sock, and whoever can use that socket
# is root on the host anyway, so a non-root user inside would protect nothing. Mount the socket only into
# this container, keep `listen:` on 127.0.0.1, and keep the state directory at the same path as on the host
# (the checked-out compose files' relative bind mounts are resolved by the Docker Engine, on the host).
FROM python:3.11-slim

# git for ls-remote/fetch; openssh-client for ssh:// remotes (GIT_SSH_COMMAND); CA certificates for https.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git openssh-client ca-certificates \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GIT_TERMINAL_PROMPT=0

WORKDIR /src
COPY pyproject.toml README.md ./
COPY reconciler ./reconciler
RUN pip install . && rm -rf /src

WORKDIR /var/lib/reconciler
VOLUME ["/var/lib/reconciler"]
EXPOSE 9469
# SIGTERM (docker stop) lets the daemon finish its current step and exit cleanly.
STOPSIGNAL SIGTERM
ENTRYPOINT ["reconciler"]
CMD ["run", "-c", "/etc/reconciler/environments.yaml"]
