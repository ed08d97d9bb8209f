# The aimesh image: operator, sidecar and CLI in one (`docker build -t ghcr.io/aimesh/aimesh:0.1.0 .`).
# The build stage runs the same staging code as `npm run image` (image/build.ts --rootfs),
# so this and the offline build give the same files: the Node 24 binary of the `node` npm
# package, the shared libraries it loads, production node_modules and the application bundled
# by esbuild into /app/aimesh (image/bundle.ts). No shell, no
# npm, no dev dependencies; it runs as uid 65532 and writes nothing, so a read-only root
# filesystem works.
FROM node:24-bookworm-slim AS build
# strip drops the debug info of the node binary (about 18 MB).
RUN apt-get update && apt-get install -y --no-install-recommends binutils && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN npm run image -- --rootfs /rootfs

FROM scratch
COPY --from=build /rootfs/ /
ENV NODE_ENV=production PATH=/usr/local/bin:/usr/bin:/bin
USER 65532:65532
WORKDIR /app
ENTRYPOINT ["/usr/local/bin/node", "/app/aimesh/main.mjs"]
