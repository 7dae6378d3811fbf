# Two commands matter: `make demo` and `make test`. Both call `make setup`, which builds
# .venv once and re-installs only when pyproject.toml changes.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-done

.PHONY: setup demo test bench clean mutation

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile scripts/setup.sh
	PY=$(PY) bash scripts/setup.sh
	touch $(STAMP)

demo: setup
	$(BIN)/cabinet demo

# scripts/services.sh starts a throwaway PostgreSQL (installing Debian's package where absent)
# for the billing tests, which run against SQLite and PostgreSQL.
test: setup
	bash scripts/services.sh
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: setup
	$(BIN)/cabinet bench link --out bench-link.json
	$(BIN)/cabinet bench session --out bench-session.json

# Mutation testing (docs/mutation.md); not part of `make test`. One worker: the CPU is shared.
# `make mutation MUTATE="billing.money cabinet.machine"` runs only those modules.
MUTMUT_VERSION := 3.8.1
MUTATE ?=

mutation: setup
	@$(BIN)/python -m pip show mutmut 2>/dev/null | grep -qx "Version: $(MUTMUT_VERSION)" || \
		$(BIN)/python -m pip install -q "mutmut==$(MUTMUT_VERSION)"
	rm -rf mutants  # a fresh run: mutmut would not re-try old survivors against new tests
	eval $(BIN)/mutmut run --max-children 1 $$($(BIN)/python scripts/mutation_score.py --patterns $(MUTATE)) \
		> mutation-run.log 2>&1 || { tail -n 40 mutation-run.log; exit 1; }
	$(BIN)/python scripts/mutation_score.py $(MUTATE) --out mutation.json

clean:
	rm -rf $(VENV) .cache build *.egg-info
