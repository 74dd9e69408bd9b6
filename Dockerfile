# privledger in a container.
#
#   docker build -t privledger .
#   docker run -d --name privledger \
#       -v privledger-data:/var/lib/privledger \
#       -v privledger-socket:/run/privledger \
#       -v /var/run/docker.sock:/var/run/docker.sock \
#       --group-add "$(stat -c %g /var/run/docker.sock)" \
#       privledger
#
# examples/compose.yaml runs it beside JupyterHub.
#
# What the default command does: gRPC on the Unix socket /run/privledger/privledger.sock
# (share /run/privledger with the Hub through a volume) and on 127.0.0.1:50051 inside
# the container (the built-in default, so that `docker exec privledger privledger ...`
# works: the CLI talks TCP only). To serve other machines, listen on 0.0.0.0 with TLS;
# plaintext on a non-loopback address is refused unless --insecure-listen is given:
#
#   docker run ... -p 50051:50051 -v /etc/privledger/tls:/tls:ro privledger \
#       serve --listen 0.0.0.0:50051 --tls-cert /tls/server.pem --tls-key /tls/server.key
#
# (the key must be readable by uid 10001; the server re-reads the files on SIGHUP,
# `docker kill -s HUP privledger`, and when they change).
#
# The limited sockets: the server creates them in /run/privledger/users/<user>
# (limited_host_dir), and the Docker daemon binds that *host* path into the user's
# container. So mount the same host directory at the same path:
# -v /run/privledger/users:/run/privledger/users (writable by uid 10001), or turn the
# proxy off with --proxy off.

# --- Build ------------------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
# The whole workspace: Cargo.toml names the `bench` member and the benches/ targets,
# and build.rs compiles proto/ with protox (pure Rust: no protoc is installed).
# .dockerignore keeps target/, .git and the Python environments out.
COPY . .
# Cached registry and target directories make rebuilds incremental (BuildKit); the
# binary is copied out of the cache in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin privledger \
 && install -D -m 0755 target/release/privledger /out/privledger

# --- Run --------------------------------------------------------------------------------
FROM debian:bookworm-slim
# An unprivileged user with a fixed uid/gid, so that host directories can be
# prepared for it (chown 10001:10001). The Docker socket is reached through its
# group: add the host's docker gid at run time (--group-add, compose `group_add`).
RUN groupadd --system --gid 10001 privledger \
 && useradd --system --uid 10001 --gid privledger --no-create-home \
        --home-dir /var/lib/privledger --shell /usr/sbin/nologin privledger \
 && install -d -o privledger -g privledger -m 0700 /var/lib/privledger \
 && install -d -o privledger -g privledger -m 0755 /run/privledger
COPY --from=build /out/privledger /usr/local/bin/privledger

# The data directory. The server refuses one that is not owned by its user or that
# is writable by group or others; a new named volume copies this directory's owner
# (10001) and mode (0700). A bind-mounted host directory must be prepared the same way.
# PRIVLEDGER_DATA also tells the CLI where admin.token is (`docker exec privledger
# privledger status` needs no --token-file); like every PRIVLEDGER_* variable it wins
# over a configuration file's data_dir.
ENV PRIVLEDGER_DATA=/var/lib/privledger
VOLUME /var/lib/privledger

# Documentation only: the default command listens on the Unix socket and on the
# container's loopback; see above for serving TCP to other machines.
EXPOSE 50051

USER privledger:privledger
# SIGTERM (docker stop) drains in-flight calls, flushes the ledger and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["privledger"]
CMD ["serve", "--unix-socket", "/run/privledger/privledger.sock"]
