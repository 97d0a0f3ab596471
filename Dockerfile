# tributary in a container: `docker build -t tributary .`, then
# `docker run --rm -v $PWD/pipeline.toml:/etc/tributary/pipeline.toml tributary`.
FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends cmake pkg-config && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked --bin tributary

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 tributary
COPY --from=build /src/target/release/tributary /usr/local/bin/tributary
USER tributary
EXPOSE 9464
ENTRYPOINT ["tributary"]
CMD ["sync", "--config", "/etc/tributary/pipeline.toml"]
