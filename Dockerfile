# pg_warden on Debian bookworm with PostgreSQL 15, installed from the
# Debian package CI builds and tests (scripts/package, then dpkg -i into a
# clean PostgreSQL 15 and pg_regress against it).
#
#   docker build -t pg_warden .
#   docker run -d --name warden -e POSTGRES_PASSWORD=change-me -p 5432:5432 pg_warden
#   psql -h localhost -U postgres -c 'CREATE EXTENSION pg_warden'
#
# The build stage runs the same scripts/setup and scripts/package as CI.

FROM debian:bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl build-essential git sudo \
 && rm -rf /var/lib/apt/lists/*
RUN curl --proto '=https' -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain 1.95.0
ENV PATH=/root/.cargo/bin:$PATH
WORKDIR /src
COPY . .
RUN SETUP_PG18=0 bash scripts/setup \
 && mkdir -p /out && cp "$(bash scripts/package | tail -1)" /out/

FROM postgres:15-bookworm
COPY --from=build /out/*.deb /tmp/
RUN apt-get update \
 && apt-get install -y --no-install-recommends /tmp/*.deb \
 && rm -rf /var/lib/apt/lists/* /tmp/*.deb
# pg_warden's workers and shared memory exist only when preloaded; the
# root key: mount a key file (warden.key_file) or set warden.key_command.
CMD ["postgres", "-c", "shared_preload_libraries=pg_warden", "-c", "max_worker_processes=16"]
