# The cyan image (CLI, proxy and operator in one static binary), built
# offline: nothing is pulled.
#   scripts/build-static --release
#   docker build -t ghcr.io/cyan-dev/cyan:0.1.0 .
FROM scratch
COPY target/x86_64-unknown-linux-gnu/dist/cyan /cyan
USER 65532:65532
ENTRYPOINT ["/cyan"]
