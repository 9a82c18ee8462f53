#!/usr/bin/env bash
# Install the k8smpi tools into /opt/k8smpi/venv; the tools stage of every image runs it twice
# (images/*/Dockerfile), as root at build time:
#
#   install-tools.sh deps SRC      SRC holds only pyproject.toml: install the dependencies it
#                                  declares (their own layer, rebuilt only when pyproject.toml
#                                  changes, not at every source change)
#   install-tools.sh package SRC   SRC is the source tree: build a wheel of it, install it
#                                  without dependencies (the deps step did), then:
#
#   /opt/k8smpi/venv                 the package and its dependencies (no pip left in it)
#   /opt/k8smpi/bin/<script>         one link per console script the package declares
#                                    ([project.scripts] in pyproject.toml: nothing is hard-coded)
#   /opt/k8smpi/console-scripts.txt  their names, one per line (the e2e tests compare it)
#   /opt/mpi/bin/kubexec             the fixed agent path the manifests use, once kubexec exists
#   /opt/mpi/etc/hostfile            an empty default; the hostfile ConfigMap is mounted over it
#
# pip's cache is a build cache mount (see the Dockerfiles): rebuilds download nothing again.
set -euo pipefail
mode=${1:?usage: install-tools.sh deps|package SRC}
src=${2:?usage: install-tools.sh deps|package SRC}
venv=/opt/k8smpi/venv
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pip=("$venv/bin/pip" --disable-pip-version-check --quiet)

# Extra CAs for pip behind a TLS-intercepting proxy (see build-ca.crt), for this script only.
# shellcheck source=images/common/pip-ca.sh
. /usr/local/lib/k8smpi/pip-ca.sh

case "$mode" in
  deps)
    python3 -m venv "$venv"
    # The project with a stub package: pip resolves and installs exactly its dependencies.
    mkdir -p "$work/stub/k8smpi_runtime"
    cp "$src/pyproject.toml" "$work/stub/"
    echo "stub" >"$work/stub/README.md"
    : >"$work/stub/k8smpi_runtime/__init__.py"
    "${pip[@]}" install "$work/stub"
    "${pip[@]}" uninstall --yes k8smpi-runtime
    exit 0
    ;;
  package) ;;
  *) echo "install-tools.sh: mode must be deps or package, not '$mode'" >&2; exit 1 ;;
esac

"${pip[@]}" wheel --no-deps --wheel-dir "$work/wheels" "$src"
"${pip[@]}" install --no-deps "$work"/wheels/k8smpi_runtime-*.whl
"${pip[@]}" check # the dependencies installed by `deps` satisfy the package

"$venv/bin/python" - >/opt/k8smpi/console-scripts.txt <<'PY'
from importlib.metadata import distribution

eps = distribution("k8smpi-runtime").entry_points
print("\n".join(sorted(ep.name for ep in eps if ep.group == "console_scripts")))
PY
# The venv needs no installer at run time.
"${pip[@]}" uninstall --yes pip setuptools || true

install -d -m 0755 /opt/k8smpi/bin /opt/k8smpi/libexec /opt/mpi/bin /opt/mpi/etc
while read -r script; do
  [ -n "$script" ] || continue
  ln -s "$venv/bin/$script" "/opt/k8smpi/bin/$script"
done </opt/k8smpi/console-scripts.txt
if grep -qx kubexec /opt/k8smpi/console-scripts.txt; then
  ln -s "$venv/bin/kubexec" /opt/mpi/bin/kubexec
fi
printf '# Default hostfile: empty, so mpirun uses the local node. The launcher mounts the\n# hostfile ConfigMap over /opt/mpi/etc (see the README).\n' >/opt/mpi/etc/hostfile
chmod -R a+rX /opt/k8smpi /opt/mpi
echo "k8smpi tools: $(tr '\n' ' ' </opt/k8smpi/console-scripts.txt)"
