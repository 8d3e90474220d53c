# edgert: `make demo` installs everything and runs the main job; `make test` runs the suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.edgert-installed
# Debian packages the tests and the demo need (cross compiler and qemu-user for aarch64 bundles;
# an OpenSSH server and client for the ssh transport's tests).
APT_PACKAGES := qemu-user-static g++-aarch64-linux-gnu openssh-server openssh-client
PYTEST_ARGS ?=

.PHONY: install system-deps test demo lint clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@$(MAKE) --no-print-directory system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[all,dev]"
	touch $(STAMP)

# Installs the missing Debian packages when running as root; otherwise says what to install.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
		echo "missing Debian packages:$$missing; run: sudo apt-get install$$missing" >&2; exit 1; \
	fi

test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

demo: install
	$(BIN)/python tools/demo.py

lint: install
	$(BIN)/ruff check edgert tests tools

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
