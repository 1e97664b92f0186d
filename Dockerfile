# The sluice image: the operator (`sluice operator run`) and the sidecar it
# injects (`sluice proxy`) are the same binary. Build: docker build -t sluice .
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p sluice \
 && cp target/release/sluice /sluice

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /sluice /usr/local/bin/sluice
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/sluice"]
