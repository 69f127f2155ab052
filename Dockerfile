# pg_warden on Debian bookworm with PostgreSQL 15.
#
#   docker build -t pg_warden .
#   docker run -d --name warden -e POSTGRES_PASSWORD=change-me -p 5432:5432 pg_warden
#   psql -h localhost -U postgres -c 'CREATE EXTENSION pg_warden'
#
# The build stage runs the same scripts/setup that CI runs (apt packages,
# cargo-pgrx 0.18.0, cargo pgrx init against the system pg_config), then a
# release build, so a broken install step fails CI before it fails here.

FROM debian:bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl build-essential git sudo \
 && rm -rf /var/lib/apt/lists/*
RUN curl --proto '=https' -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain 1.95.0
ENV PATH=/root/.cargo/bin:$PATH
WORKDIR /src
COPY . .
RUN bash scripts/setup \
 && PROFILE=release bash scripts/build-install \
 && mkdir -p /out/lib /out/extension \
 && cp /usr/lib/postgresql/15/lib/pg_warden.so /out/lib/ \
 && cp /usr/share/postgresql/15/extension/pg_warden* /out/extension/

FROM postgres:15-bookworm
COPY --from=build /out/lib/ /usr/lib/postgresql/15/lib/
COPY --from=build /out/extension/ /usr/share/postgresql/15/extension/
# pg_warden's workers and shared memory exist only when preloaded.
CMD ["postgres", "-c", "shared_preload_libraries=pg_warden", "-c", "max_worker_processes=16"]
