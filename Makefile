# Two commands matter: `make demo` and `make test`. Both call `make setup`, which builds
# .venv once and re-installs only when pyproject.toml changes.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-done

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile scripts/setup.sh
	PY=$(PY) bash scripts/setup.sh
	touch $(STAMP)

demo: setup
	$(BIN)/cabinet demo

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: setup
	$(BIN)/cabinet bench link --out bench-link.json
	$(BIN)/cabinet bench session --out bench-session.json

clean:
	rm -rf $(VENV) .cache build *.egg-info
