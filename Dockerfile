# Multi-stage build: compile with the Rust image, run on distroless as non-root.
# TLS roots are compiled in (webpki-roots), so the runtime needs no CA store.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin pleo-gateway
# An empty directory to copy in as the (writable) OAuth state_dir.
RUN mkdir -p /empty-state

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/pleo-gateway /usr/local/bin/pleo-gateway
# The image's default config is the offline demo; mount your own at this path
# (ConfigMap) with secrets from env or files (Secret).
COPY gateway.yaml /etc/pleo-gateway/gateway.yaml
COPY sandbox /etc/pleo-gateway/sandbox
# Rotated OAuth refresh tokens are written here (the demo's state_dir is
# ./state next to the config). In production, mount a persistent volume and
# point state_dir at it: losing this directory means a new consent.
COPY --from=build --chown=nonroot:nonroot /empty-state /etc/pleo-gateway/state
COPY --from=build --chown=nonroot:nonroot /empty-state /var/lib/pleo-gateway
USER nonroot:nonroot
# 8080: apps (listen), 9464: admin (/metrics /healthz /readyz /tenants)
EXPOSE 8080 9464
ENTRYPOINT ["/usr/local/bin/pleo-gateway"]
CMD ["--config", "/etc/pleo-gateway/gateway.yaml"]
