# The README's two commands: `make demo` and `make test` (both set up a fresh Debian machine as root).
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo test setup lint unit bench kind-test clean

demo: setup
	hack/dockerd.sh
	hack/demo.sh

test: setup
	hack/dockerd.sh
	$(MAKE) lint
	$(MAKE) unit

setup:
	hack/setup.sh

lint:
	$(VENV)/bin/ruff check ctrace tests benchmarks hack
	$(VENV)/bin/ruff format --check ctrace tests benchmarks hack
	$(VENV)/bin/mypy

unit:
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	$(PY) -m benchmarks.run
	$(PY) -m benchmarks.fanout

kind-test: setup
	hack/kind-test.sh

clean:
	rm -rf $(VENV) demo-build .pytest_cache .mypy_cache .ruff_cache
