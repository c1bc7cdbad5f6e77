# drainguard: build once, run as an unprivileged user.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p drainguard-daemon --bin drainguard

FROM debian:bookworm-slim
RUN useradd --system --home /var/lib/drainguard --create-home drainguard \
    && apt-get update && apt-get install -y --no-install-recommends curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/drainguard /usr/local/bin/drainguard
COPY config /etc/drainguard
USER drainguard
WORKDIR /var/lib/drainguard
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/drainguard"]
CMD ["run", "--config", "/etc/drainguard/drainguard.docker.toml"]
