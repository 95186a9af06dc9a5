# PostgreSQL, Redis and HAProxy from Debian's packages, for compose.yaml: one target each
# (`docker build --target haproxy -f services.Dockerfile .ci/image`). They need no image
# registry, only a Debian mirror; in production use your own or managed PostgreSQL and
# Redis (docs/deployment.md). DEBIAN_IMAGE is any Debian bookworm image with apt
# (compose.yaml passes notifyhub-base:bookworm from base.sh when told to).
ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM ${DEBIAN_IMAGE} AS debian
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8

FROM debian AS postgres
# No "main" cluster from the package: the entrypoint initialises $PGDATA (a volume).
RUN mkdir -p /etc/postgresql-common \
    && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf \
    && apt-get update -q \
    && apt-get install -y -q --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o postgres -g postgres -m 700 /var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
USER postgres
EXPOSE 5432
# postgres stops on SIGINT at once, rolling back open transactions ("fast" shutdown).
STOPSIGNAL SIGINT
ENTRYPOINT ["postgres-entrypoint"]

FROM debian AS redis
RUN apt-get update -q \
    && apt-get install -y -q --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o redis -g redis /data
USER redis
WORKDIR /data
EXPOSE 6379
# Reachable only on compose's network; set a password (--requirepass) elsewhere.
ENTRYPOINT ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", \
            "--appendonly", "yes", "--dir", "/data"]

FROM debian AS haproxy
RUN apt-get update -q \
    && apt-get install -y -q --no-install-recommends haproxy \
    && rm -rf /var/lib/apt/lists/*
# compose.yaml mounts haproxy.cfg at /etc/haproxy/haproxy.cfg.
USER haproxy
EXPOSE 8080
# SIGUSR1: stop accepting, let open connections finish (bounded by hard-stop-after).
STOPSIGNAL SIGUSR1
ENTRYPOINT ["haproxy", "-W", "-db", "-f", "/etc/haproxy/haproxy.cfg"]
