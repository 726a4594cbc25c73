#!/usr/bin/env bash
# Make a local Python base image from Debian packages alone, for hosts that
# reach a Debian mirror but no image registry (so `python:3.11-slim` cannot be
# pulled).  The result plays the part of python:3.11-slim for docker/Dockerfile:
# Debian 12 (bookworm, with its security updates) and its Python 3.11, with
# `python` and `python -m venv` working, CA certificates, nothing else; no
# documentation, manual pages or locales, as in Debian's slim images.
#
#   docker/build-base.sh [TAG]          # default TAG: localhost/bgdask-base:bookworm
#   podman build -f docker/Dockerfile --build-arg BASE=localhost/bgdask-base:bookworm -t bgdask .
#
# Needs root and mmdebstrap (apt-get install mmdebstrap), which installs the
# packages with apt (so much faster than debootstrap) and writes the root
# filesystem as a tar stream straight into `podman import` / `docker import`.
# Packages come from the Debian mirrors the host's apt uses for bookworm and
# bookworm-security (its /etc/apt sources), so a site's own mirror or proxy
# serves them too.  Environment:
#   ENGINE                  podman or docker (default: podman if installed, else docker)
#   DEBIAN_MIRROR           the mirror for bookworm and bookworm-updates (default: the host's)
#   DEBIAN_SECURITY_MIRROR  the mirror for bookworm-security (default: the host's)
set -euo pipefail
trap 'echo "build-base.sh: error: line $LINENO: $BASH_COMMAND (exit $?)" >&2' ERR

TAG=${1:-localhost/bgdask-base:bookworm}
SUITE=bookworm

# apt_uri SUITE: the first URI the host's apt sources (deb822 or one-line) give for SUITE
apt_uri() {
    local suite=$1 f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -e $f ]] || continue
        uri=$(awk -v s="$suite" '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " s " ") && uris != "") {
                    split(uris, u, " "); print u[1]; found = 1; exit
                }
                types = uris = suites = ""
            }
            /^[ \t]*$/ { flush(); next }
            /^Types:/  { sub(/^Types:[ \t]*/, "");  types = $0 }
            /^URIs:/   { sub(/^URIs:[ \t]*/, "");   uris = $0 }
            /^Suites:/ { sub(/^Suites:[ \t]*/, ""); suites = $0 }
            END { if (!found) flush() }' "$f")
        if [[ -n $uri ]]; then echo "$uri"; return; fi
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -e $f ]] || continue
        uri=$(awk -v s="$suite" '
            $1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ }  # [options]
                if ($(i + 1) == s) { print $i; exit }
            }' "$f")
        if [[ -n $uri ]]; then echo "$uri"; return; fi
    done
}
MIRROR=${DEBIAN_MIRROR:-$(apt_uri "$SUITE")}
SECURITY=${DEBIAN_SECURITY_MIRROR:-$(apt_uri "$SUITE-security")}
if [[ -z ${ENGINE:-} ]]; then
    if command -v podman >/dev/null; then ENGINE=podman; else ENGINE=docker; fi
fi

die() { echo "build-base.sh: error: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "run as root (mmdebstrap --mode=root needs it)"
command -v mmdebstrap >/dev/null || die "mmdebstrap not found: apt-get install mmdebstrap"
command -v "$ENGINE" >/dev/null || die "$ENGINE not found (set ENGINE=podman or ENGINE=docker)"
[[ -n $MIRROR ]] || die "no Debian mirror for $SUITE in the host's apt sources: set DEBIAN_MIRROR"
[[ -n $SECURITY ]] || die "no Debian mirror for $SUITE-security in the host's apt sources: set DEBIAN_SECURITY_MIRROR"

LOG=$(mktemp /tmp/bgdask-base.XXXXXX.log)
trap 'rm -f "$LOG"' EXIT
t0=$SECONDS

make_rootfs() {  # the root filesystem, as a tar stream on stdout
    # force-unsafe-io: no fsync per file while the image is made (a throwaway
    # tree needs no crash safety); removed again before the tar is written.
    # The other dpkg and apt options stay in the image, as in Debian's slim images.
    mmdebstrap --mode=root --variant=minbase --format=tar \
        --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
        --include=python3,python3-venv,python-is-python3,ca-certificates \
        --aptopt='APT::Install-Recommends "false"' \
        --aptopt='Acquire::Languages "none"' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/lintian/*' \
        --dpkgopt=force-unsafe-io \
        --customize-hook='sed -i "/force-unsafe-io/d" "$1/etc/dpkg/dpkg.cfg.d/99mmdebstrap"' \
        --customize-hook='rm -f "$1/etc/resolv.conf"; : >"$1/etc/hostname"' \
        "$SUITE" - \
        "deb $MIRROR $SUITE main" \
        "deb $MIRROR $SUITE-updates main" \
        "deb $SECURITY $SUITE-security main"
}

echo "== $SUITE from $MIRROR (mmdebstrap) into $TAG ($ENGINE import)"
# the output of both (mmdebstrap's progress, the image id) only when they fail
{
    make_rootfs | "$ENGINE" import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        - "$TAG"
} >"$LOG" 2>&1 || { tail -n 30 "$LOG" >&2; die "making the base image failed"; }
"$ENGINE" run --rm "$TAG" python -c 'import ssl, sys, venv; print("   python", sys.version.split()[0])'
echo "   $TAG built in $((SECONDS - t0)) s"
