# k8smpi-runtime: one command per job. `make test` works on a fresh Debian/Ubuntu machine.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
DEVCLUSTER := $(PYTHON) -m devcluster
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help setup venv apt binaries addons mpi lint typecheck unit e2e test devcluster devcluster-down \
	devcluster-clean devcluster-pin demo images images-cuda test-cuda bench-kubexec

help:
	@echo "make test             setup + lint + type checks + unit + e2e (starts the devcluster)"
	@echo "make test-cuda        only the GPU base from PyPI: build and test it (part of make test)"
	@echo "make demo             a batch script calling plain mpirun, run on the devcluster (Open MPI 4.1 and 5)"
	@echo "make devcluster       start (or reuse) the local control plane; prints export KUBECONFIG=..."
	@echo "                      WITH=jobset,kueue also runs JobSet and Kueue beside it"
	@echo "make devcluster-down  stop everything the devcluster started"
	@echo "make images           build the CPU, waiter and example images (podman or Docker)"
	@echo "make images-cuda      build the GPU base with CUDA from PyPI (and the example FROM it)"
	@echo "make bench-kubexec    kubexec against kubectl: one call, with a master, fan-out (curves)"

# --- setup ----------------------------------------------------------------------------------
venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check --upgrade pip
	# editable_mode=compat: a plain path in a .pth file instead of setuptools' import hook,
	# which every Python start (every kubexec call) would import: 9 ms here.
	$(VPY) -m pip install -q --disable-pip-version-check -e '.[test]' \
		--config-settings editable_mode=compat
	touch $@

apt:
	bash devcluster/apt.sh

binaries:
	bash devcluster/build.sh >/dev/null

# JobSet and Kueue (k8smpi-job's JobSet shape and gang admission); started only when asked:
# `make devcluster WITH=jobset,kueue`, or by the e2e tests that need them.
addons:
	bash devcluster/build-addons.sh >/dev/null

mpi: apt
	bash devcluster/mpi/install.sh >/dev/null

# images: the real node runs them (`devcluster up` imports them into its containerd).
setup: apt venv binaries addons mpi images

# --- checks ---------------------------------------------------------------------------------
lint: venv
	ruff check .
	ruff format --check .
	lint-imports

typecheck: venv
	mypy

unit: venv
	pytest -q tests/unit

# The e2e tier must run: the conftest fails the session when no e2e test passed. It builds and
# tests the GPU base from PyPI too (UCX and Open MPI compiled: about 9 min cold on 2 cores).
e2e: setup
	K8SMPI_REQUIRE_E2E=1 pytest -q tests/e2e

test: setup lint typecheck
	K8SMPI_REQUIRE_E2E=1 pytest -q tests

# The GPU base's tests alone (marker cuda_image), after a change to images/base or the CUDA rules.
test-cuda: setup
	pytest -q -m cuda_image tests/e2e

# --- devcluster -----------------------------------------------------------------------------
devcluster: apt binaries images
	@$(DEVCLUSTER) up $(if $(WITH),--with $(WITH))

devcluster-down:
	@$(DEVCLUSTER) down

devcluster-clean:
	@$(DEVCLUSTER) clean

# Rewrite the Go build modules from devcluster/versions.env (after changing a version there).
devcluster-pin:
	bash devcluster/pin.sh

demo: setup
	$(VPY) -m devcluster.demo

# --- images ---------------------------------------------------------------------------------
# The CPU image once per MPI (images.build.MPIS), the waiter, and the example user image FROM
# each CPU image, built here without a registry; the GPU base needs NVIDIA's hosts:
# `$(VPY) -m images.build base --pull` elsewhere.
MPIS := openmpi4,openmpi5,mpich,impi
images: apt venv
	$(VPY) -m images.build cpu waiter example --example-from cpu --set MPI=$(MPIS)

# The GPU base with CUDA from PyPI (UCX and Open MPI compiled: long on 2 cores; see README).
images-cuda: apt venv
	$(VPY) -m images.build base-pypi example --example-from base-pypi

# --- benchmarks -----------------------------------------------------------------------------
# kubexec beside kubectl on the devcluster: prints the ratios with the machine load, writes
# bench/figures/kubexec.json and kubexec-fanout.png (see bench/kubexec_bench.py).
bench-kubexec: setup
	$(VPY) -m pip install -q --disable-pip-version-check -e '.[test,bench]' \
		--config-settings editable_mode=compat
	$(VPY) bench/kubexec_bench.py
