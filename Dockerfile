# syntax=docker/dockerfile:1
#
# Comfy Gateway: nginx in front of the Swift FastCGI app, in one container, started the way
# `make run` starts them: `FCGIApp run` renders nginx's configuration from the app's own
# parsed settings, starts the app, waits for its sockets, starts nginx, restarts the app if it
# dies, and drains both on SIGTERM. ComfyUI runs elsewhere (see compose.yaml, docs/deploy.md).
#
#   docker build -t comfy-gateway .
#   docker run -p 8000:8000 -e COMFYUI_SERVER=http://gpu1:8188 \
#     -v cgw-images:/var/lib/comfy-gateway/output_images -v cgw-state:/var/lib/comfy-gateway/state \
#     --ulimit nofile=65536:65536 --stop-timeout 150 comfy-gateway

# Swift 6.3 on Debian 12, and the Debian 12 it runs on: the C libraries are the same builds.
ARG SWIFT_IMAGE=swift:6.3-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------------------------------------
FROM ${SWIFT_IMAGE} AS build

# The headers the module maps in Sources/CFastCGI, CCurl and COpenSSL need (the list in
# scripts/install-deps.sh), the image codecs' among them (output_format webp and jpeg).
# Versions are not pinned: Debian drops superseded versions from its mirrors, so the base
# image tag is the pin.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libfcgi-dev libcurl4-openssl-dev libssl-dev \
      libpng-dev libwebp-dev libturbojpeg0-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# pipefail: a failing command on the left of a pipe fails the step.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Dependencies first, so this layer stays cached until the manifest or the pins change.
# Package.resolved is git-ignored: the glob copies it when it is there and does not fail when
# it is not; with it, the build uses exactly the versions `make test` used.
COPY Package.* ./
RUN if [ -f Package.resolved ]; then swift package resolve --force-resolved-versions; else swift package resolve; fi

# Only what the build reads (a .dockerignore would also keep .build/ out of the context).
# Tests/ too: the manifest declares the test targets, and SwiftPM refuses to load a package
# whose test target folders are missing, even to build one product.
COPY Sources ./Sources
COPY Tests ./Tests

# --static-swift-stdlib links the Swift runtime and Foundation into the binary, so the runtime
# image needs no Swift toolchain, only the C libraries below. The ldd line fails the build if a
# libswift*.so slipped through. swift-backtrace-static gives crash reports their backtraces.
RUN swift build -c release --product FCGIApp --static-swift-stdlib \
 && bin="$(swift build -c release --show-bin-path)" \
 && install -D -m 0755 "$bin/FCGIApp" /out/FCGIApp \
 && install -D -m 0755 /usr/libexec/swift/linux/swift-backtrace-static /out/swift-backtrace-static \
 && if ldd /out/FCGIApp | grep -E 'libswift|libFoundation|libdispatch'; then echo "Swift runtime linked dynamically" >&2; exit 1; fi

# ---------------------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE}

# nginx: the front door (`FCGIApp run` starts Debian's /usr/sbin/nginx with the rendered config;
#   Debian's own nginx.conf and sites are unused and no system nginx service runs in here).
# libfcgi0ldbl libcurl4 libssl3 libstdc++6: what the binary links (libfcgi, libcurl, libcrypto,
#   and the C++ runtime the static Swift runtime still needs).
# libpng16-16 libwebp7 libturbojpeg0: the image codecs (output_format webp and jpeg).
# ca-certificates: HTTPS to S3/OSS and to webhook receivers.
# tini: PID 1, reaps orphans and passes SIGTERM on to the supervisor only (no -g: the
#   supervisor stops nginx gracefully and drains the app in its own order).
# curl: the health check. sqlite3: online backups of the job database (docs/deploy.md).
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      nginx libfcgi0ldbl libcurl4 libssl3 libstdc++6 \
      libpng16-16 libwebp7 libturbojpeg0 \
      ca-certificates tini curl sqlite3 \
 && rm -rf /var/lib/apt/lists/*

# One unprivileged user runs the supervisor, the app and nginx (master and workers): the app's
# sockets are 0660, so nginx reaches them and nothing else in the container does. Port 8000
# needs no capability. A fixed uid makes bind-mounted folders easy to chown (10001:10001).
RUN groupadd --system --gid 10001 comfy-gateway \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /var/lib/comfy-gateway --shell /usr/sbin/nologin comfy-gateway

# Code and read-only assets belong to root; the app only reads them.
COPY --from=build /out/FCGIApp /out/swift-backtrace-static /opt/comfy-gateway/bin/
COPY nginx /opt/comfy-gateway/nginx
COPY static /opt/comfy-gateway/static
COPY workflow /opt/comfy-gateway/workflow

# Writable state: images and the job database (mount volumes here), and RUN_DIR (sockets,
# the rendered nginx config, nginx's temp files). nginx's logs in RUN_DIR/logs point at the
# container's stdout/stderr, next to the app's own log lines (`docker logs`); mount a volume
# on /run/comfy-gateway/logs to get files instead.
RUN install -d -o comfy-gateway -g comfy-gateway -m 0750 \
      /var/lib/comfy-gateway /var/lib/comfy-gateway/output_images /var/lib/comfy-gateway/state \
      /run/comfy-gateway /run/comfy-gateway/logs \
 && ln -s /dev/stdout /run/comfy-gateway/logs/access.log \
 && ln -s /dev/stderr /run/comfy-gateway/logs/error.log \
 && chown -h comfy-gateway:comfy-gateway /run/comfy-gateway/logs/access.log /run/comfy-gateway/logs/error.log

# Absolute paths for every folder the app and nginx use. Relative ones (a .env written for
# `make run` has them) resolve against WORKDIR, /opt/comfy-gateway, which only the code and
# assets may use: keep OUTPUT_DIR, STATE_DIR and RUN_DIR out of a .env used here (compose.yaml
# pins the first two). Everything else keeps the app's defaults; set COMFYUI_SERVER (and
# SERVER_BASE_URL for a public host name) at run time.
ENV RUN_DIR=/run/comfy-gateway \
    OUTPUT_DIR=/var/lib/comfy-gateway/output_images \
    STATE_DIR=/var/lib/comfy-gateway/state \
    WORKFLOW_DIR=/opt/comfy-gateway/workflow \
    STATIC_DIR=/opt/comfy-gateway/static \
    NGINX_TEMPLATE_DIR=/opt/comfy-gateway/nginx \
    SWIFT_BACKTRACE=enable=yes,sanitize=yes,threads=all,images=all,interactive=no,swift-backtrace=/opt/comfy-gateway/bin/swift-backtrace-static

# The app also reads ./.env when present: bind-mount one at /opt/comfy-gateway/.env if you prefer.
WORKDIR /opt/comfy-gateway
USER 10001:10001

EXPOSE 8000

# 200 while nginx, the app and at least one ComfyUI backend are usable; 503 (unhealthy) when
# no backend is. With TLS_CERT set nginx speaks HTTPS on PORT, and the certificate names the
# public host, not 127.0.0.1: hence -k.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["sh", "-c", "curl -fsS -k -o /dev/null --max-time 4 \"http$([ -n \"$TLS_CERT\" ] && echo s)://127.0.0.1:${PORT:-8000}/healthz\" || exit 1"]

# SIGTERM: nginx finishes open requests, the app drains for up to SHUTDOWN_DRAIN_TIMEOUT (120 s
# by default), then both exit. Give `docker stop` that long (compose.yaml: stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "/opt/comfy-gateway/bin/FCGIApp"]
# `run`: nginx and the app, supervised. Other commands: `keys ...`, `render-nginx`, `serve`.
CMD ["run"]
