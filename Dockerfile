# EaseChat Nexus container image.
#
#   docker build -t ease-chat-nexus .
#   docker run --rm -p 6500:6500 --ulimit memlock=-1 \
#     --security-opt seccomp=deploy/seccomp-io-uring.json ease-chat-nexus
#
# wss beside ws: mount the certificate directory read-only and name the
# files (the key must be readable by uid 10001, e.g. group-readable with
# that group, or mode 0644 on a volume only this container sees):
#
#   docker run --rm -p 6500:6500 -p 6543:6543 --ulimit memlock=-1 \
#     --security-opt seccomp=deploy/seccomp-io-uring.json \
#     -v /etc/easechat/tls:/tls:ro ease-chat-nexus 0.0.0.0:6500 \
#     --tls-listen 0.0.0.0:6543 --tls-cert /tls/fullchain.pem --tls-key /tls/privkey.pem
#
# Rotate by replacing the files on the host and `docker kill -s HUP <name>`:
# live connections stay, new handshakes get the new certificate. Mount the
# directory, not the files: a renewal that replaces a file (a new inode, as
# certbot and cert-manager do) is seen through a directory mount only.
#
# Every step below is also run as a plain script by scripts/container-check.sh
# (in CI), since no Docker engine runs on the development machines.

# --- build stage: dependencies are cached apart from the sources -------------
FROM rust:1-bookworm AS builder
# glommio's build script runs git.
RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# glommio 0.9.0 with one executor fix (vendor/README.md).
COPY vendor vendor
COPY shards/Cargo.toml shards/Cargo.toml
COPY protocol/Cargo.toml protocol/Cargo.toml
COPY uring_batch/Cargo.toml uring_batch/Cargo.toml
COPY auth/Cargo.toml auth/Cargo.toml
# The client crate is a workspace member the nexus does not use (its
# dependencies are not built): its manifest and a stub let cargo load the
# workspace.
COPY client/Cargo.toml client/Cargo.toml
# Stub sources so `cargo build` compiles (and caches) only the dependencies.
RUN mkdir -p src shards/src protocol/src client/src uring_batch/src auth/src \
 && echo 'fn main() {}' > src/main.rs && echo 'fn main() {}' > client/src/main.rs \
 && touch src/lib.rs shards/src/lib.rs protocol/src/lib.rs client/src/lib.rs uring_batch/src/lib.rs auth/src/lib.rs \
 && cargo build --release --locked --bin ease_chat_nexus \
 && rm -rf src shards/src protocol/src uring_batch/src auth/src
COPY shards shards
COPY protocol protocol
COPY uring_batch uring_batch
COPY auth auth
COPY src src
RUN touch src/main.rs src/lib.rs shards/src/lib.rs protocol/src/lib.rs uring_batch/src/lib.rs auth/src/lib.rs \
 && cargo build --release --locked --bin ease_chat_nexus

# --- runtime stage: the binary, a non-root user, nothing else ---------------
FROM debian:bookworm-slim
RUN useradd --system --no-create-home --uid 10001 nexus
COPY --from=builder /src/target/release/ease_chat_nexus /usr/local/bin/ease_chat_nexus
USER nexus
# ws; wss when started with --tls-listen 0.0.0.0:6543.
EXPOSE 6500 6543
# SIGTERM closes every connection with 1000 "server shutdown" and exits 0.
STOPSIGNAL SIGTERM
# No terminal needed: end of standard input only turns the console off.
ENTRYPOINT ["/usr/local/bin/ease_chat_nexus"]
CMD ["0.0.0.0:6500"]
