# syntax=docker/dockerfile:1
# Build: docker build -t idmq .
# Run:   docker run -p 1883:1883 -p 8083:8083 -p 8080:8080 -v idmq-data:/var/lib/idmq idmq
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/idmq/idmq/broker.Version=${VERSION}" -o /out/idmq ./cmd/idmq
# The image's config is the example with its data in the volume; the volume directory must belong to nonroot.
RUN sed 's#^data_dir: .*#data_dir: /var/lib/idmq#' config.example.yaml > /out/idmq.yaml && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/idmq /usr/local/bin/idmq
COPY --from=build /out/idmq.yaml /etc/idmq/idmq.yaml
COPY --from=build --chown=nonroot:nonroot /out/data /var/lib/idmq
# data_dir in the image's config points here; mount a volume to keep sessions, retained messages and keys.
VOLUME /var/lib/idmq
WORKDIR /var/lib/idmq
USER nonroot:nonroot
# MQTT over TCP, TLS, WebSocket, secure WebSocket; HTTP API (token exchange, JWKS, health, metrics).
EXPOSE 1883 8883 8083 8084 8080
ENTRYPOINT ["/usr/local/bin/idmq"]
CMD ["serve", "-c", "/etc/idmq/idmq.yaml"]
