# syntax=docker/dockerfile:1
#
# cardguard's container image: built with the Rust toolchain the repository is tested on, run
# as a non-root user on a distroless base (glibc, CA certificates, no shell).
#
#   docker build -t cardguard .
#   docker run --rm -p 9201:9201 cardguard --listen=0.0.0.0:9201 \
#       --upstream=http://victoriametrics:8428/api/v1/write
#
# The arguments after the image name go to `cardguard serve`. The default ones make it listen
# on all interfaces (cardguard's own default is 127.0.0.1:9201, unreachable from outside a
# container): when you pass your own, pass --listen=0.0.0.0:9201 too, or set
# `server.listen_address: 0.0.0.0:9201` in the config file.
#
# CI does not build this image (no registry is reachable there); examples/compose/ uses it.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# The registry and target caches (BuildKit) keep rebuilds after a source change short.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin cardguard \
    && cp target/release/cardguard /cardguard

# Debian 12, as the build stage, so the glibc the binary links against is there.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /cardguard /usr/local/bin/cardguard
USER nonroot:nonroot
EXPOSE 9201
ENTRYPOINT ["/usr/local/bin/cardguard", "serve"]
CMD ["--listen=0.0.0.0:9201"]
