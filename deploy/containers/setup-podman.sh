#!/bin/sh
# Podman on this kind of machine (Debian bookworm, root, no systemd, hybrid cgroups, no
# CAP_SYS_RESOURCE). Idempotent. Without the config every container fails with
# "crun: setrlimit RLIMIT_NOFILE: Operation not permitted", then "cgroups in hybrid mode not
# supported" (hence runc).
# Vendored from the workplace's ../shared/containers; podman-compose (Debian's 1.0.3) added.
set -eu
command -v podman >/dev/null 2>&1 && command -v mmdebstrap >/dev/null 2>&1 \
  && command -v podman-compose >/dev/null 2>&1 || {
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q podman buildah mmdebstrap runc \
    fuse-overlayfs slirp4netns uidmap golang-github-containernetworking-plugin-dnsname podman-compose >/dev/null
}
mkdir -p /etc/containers
cat > /etc/containers/containers.conf <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
CONF
podman info --format '{{.Host.OCIRuntime.Name}} {{.Version.Version}}'
