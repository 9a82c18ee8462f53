# Sourced (bash) by the build scripts that run pip in an image build (install-tools.sh,
# images/base/cuda-from-pypi.sh): point pip at the system CAs plus the build machine's extra CAs
# (images/common/build-ca.crt, filled by the image tool; empty placeholder otherwise), for PyPI
# behind a TLS-intercepting proxy. Needs $work, a scratch directory the caller removes.
build_ca=/usr/local/lib/k8smpi/build-ca.crt
if [ -f "$build_ca" ] && grep -q "BEGIN CERTIFICATE" "$build_ca"; then
  cat /etc/ssl/certs/ca-certificates.crt "$build_ca" >"$work/ca.pem"
  export PIP_CERT="$work/ca.pem"
fi
