# Roost: the two commands are `make demo` (the whole system on this machine; `roost demo --quick`: one device)
# and `make test`. Each sets up .venv on its own.
# The interpreter: python3, unless other users could not run it (scripts/pick-python says why).
ifeq ($(origin PY),undefined)
PY := $(shell scripts/pick-python)
endif
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

install: $(STAMP)

.PHONY: install demo test test-demo test-fast lint typecheck pytest pytest-fast bench bench-inference bench-fleet bench-provision bench-learn browser podman prometheus sshd flower clean

$(STAMP): pyproject.toml scripts/pick-python
	@# A .venv built on another interpreter is rebuilt from scratch.
	@if [ -f $(VENV)/pyvenv.cfg ] && [ "$$($(BIN)/python -c 'import os,sys; print(os.path.realpath(sys._base_executable))' 2>/dev/null)" != "$$($(PY) -c 'import os,sys; print(os.path.realpath(sys.executable))')" ]; then \
	  echo "note: .venv was built on another interpreter; rebuilding it on $(PY)"; rm -rf $(VENV); fi
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[hub,dev,bench]'
	touch $(STAMP)

demo: $(STAMP) sshd flower
	$(BIN)/roost demo

test: $(STAMP) lint typecheck pytest

# The unit tier: ruff, mypy and the tests without real agents, hubs or browsers (not marked `slow`;
# tests/conftest.py says which are), under 2 minutes on the project's 2-core VM.
test-fast: $(STAMP) lint typecheck pytest-fast

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts

typecheck: $(STAMP)
	$(BIN)/mypy

# Two workers (pytest-xdist), one test file each at a time: most tests wait on real agents, hubs and
# brokers, so the 2-core machine runs the whole suite in about 60 % of the serial time.
PYTEST_WORKERS ?= 2
pytest: $(STAMP) browser podman prometheus sshd flower
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadfile -m "not demo"

# The whole-system demo end to end (a hub, three agents, sshd, the cluster, a federated job: 4 to 9 minutes on
# the 2-core VM), kept out of `make test`'s 10 minutes; CI (.ci/run) runs it after `make test`.
test-demo: $(STAMP) sshd flower
	$(BIN)/pytest -q -m demo tests/demo

pytest-fast: $(STAMP)
	$(BIN)/pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python bench/ipc.py

bench-inference: $(STAMP)
	$(BIN)/python bench/inference.py

bench-fleet: $(STAMP)
	$(BIN)/python bench/fleet.py

bench-provision: $(STAMP) sshd
	$(BIN)/python bench/provision.py

# The console tests drive Debian's Chromium headless (Playwright never downloads a browser here).
# Installed when missing and possible (root + apt); otherwise those tests skip, or fail when
# ROOST_REQUIRE_SERVICES=1.
browser:
	@test -x /usr/bin/chromium || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  echo "note: installing Debian's chromium (and the libraries it needs) for the console's browser tests" && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
	  echo "note: /usr/bin/chromium is missing and could not be installed; browser tests will skip"

# The container tests drive Debian's Podman (runc) through its Docker-compatible API and the docker CLI;
# scripts/setup-podman installs it when missing and possible and writes .venv/containers.conf.
podman: $(STAMP)
	@scripts/setup-podman $(VENV)/containers.conf

# The metrics tests run Debian's Prometheus (and its promtool) against a real hub and agent; the
# Grafana dashboards are checked by running every panel's query on it. Installed when missing and
# possible (root + apt); otherwise those tests skip, or fail when ROOST_REQUIRE_SERVICES=1.
prometheus:
	@command -v promtool >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  echo "note: installing Debian's prometheus (and promtool) for the metrics tests" && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } || \
	  echo "note: prometheus/promtool are missing and could not be installed; metrics tests will skip"


# Provisioning over SSH is tested against Debian's real OpenSSH server (sshd as a child process of the test, on
# 127.0.0.1) and sudo (--become). Installed when missing and possible (root + apt); otherwise those tests skip,
# or fail when ROOST_REQUIRE_SERVICES=1.
sshd:
	@{ test -x /usr/sbin/sshd && test -x /usr/bin/sudo; } || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  echo "note: installing Debian's openssh-server and sudo for the provisioning tests" && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server sudo; } || \
	  echo "note: /usr/sbin/sshd or /usr/bin/sudo is missing and could not be installed; provisioning tests will skip"

# Federated learning runs Flower (flwr 1.42) in its own venv: its fastapi/rich/typer/uvicorn pins conflict with
# Roost's. Roost starts flower-superlink / flower-supernode / flwr from .venv-flower/bin (docs/learning.md).
FLOWER_VENV := .venv-flower
FLOWER_STAMP := $(FLOWER_VENV)/.installed
flower: $(FLOWER_STAMP)

$(FLOWER_STAMP): requirements/flower.txt
	$(PY) -m venv $(FLOWER_VENV)
	$(FLOWER_VENV)/bin/pip install --quiet -r requirements/flower.txt
	touch $(FLOWER_STAMP)

# Issue 13's collaborative-AI benchmarks, one after the other: federated (Flower), joint, parallel.
bench-learn: $(STAMP) flower
	$(BIN)/python bench/learn.py

bench-learn-federated: $(STAMP) flower
	$(BIN)/python bench/learn_federated.py

clean:
	rm -rf $(VENV) $(FLOWER_VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
