# syntax=docker/dockerfile:1
# Build stage: the pinned toolchain, release profile, only the controller binary.
FROM docker.io/library/rust:1.95.0-slim-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin windlass

# Runtime: distroless with glibc, no shell, non-root (UID 65532). Run with a read-only root
# filesystem; the controller writes nothing to disk.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /src/target/release/windlass /usr/local/bin/windlass
USER 65532:65532
EXPOSE 8080 8081 8082
ENTRYPOINT ["/usr/local/bin/windlass"]
CMD ["run"]
