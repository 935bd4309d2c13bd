# l3node — the two commands a fresh machine needs: `make demo` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PEERS   := dcmtk orthanc orthanc-dicomweb dicom3tools chromium postgresql

.PHONY: install peers test demo lint bench clean

install: $(STAMP)

# Re-installs only when pyproject.toml changes; a no-op otherwise.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# DICOM peers the tests talk to: DCMTK, Orthanc (+DICOMweb), dciodvfy.
peers:
	@missing=""; \
	for p in $(PEERS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else echo "missing Debian packages:$$missing (run as root or install them)"; fi; \
	fi

test: install peers
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check l3node training tests benchmarks

# A phantom study through a real node: send, localize, KOS + SC into a folder (l3node/demo.py).
demo: install
	$(BIN)/python -m l3node.demo

# One table, measured in one run against real peers (DCMTK, Orthanc: `make peers`) and
# written to benchmarks/RESULTS.md; `benchmarks/run_all.py --quick` checks the harness.
bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
