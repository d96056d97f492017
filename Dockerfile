# The `meridian` image: the operator, and the booking workload of inCluster and aws Regions
# (the Helm chart and the operator's --workload-image default to meridian:0.1.0).
#
#   docker build -t meridian:0.1.0 .
#   kind load docker-image meridian:0.1.0 --name meridian
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p meridian-operator --bin meridian

FROM debian:bookworm-slim
# CA roots for the AWS APIs, OpenSearch Service domains and OIDC key sets.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/meridian /usr/local/bin/meridian
# The chart runs it as this user with a read-only root file system.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/meridian"]
