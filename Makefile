# The two commands a newcomer needs: `make demo` and `make test`. Both set themselves up.
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint typecheck pytest lock clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt scripts/apt-packages.txt scripts/bootstrap
	scripts/bootstrap
	touch $@

demo: setup
	$(BIN)/jakartaone demo

test: setup lint typecheck pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

# Two workers for two cores; tests that need the machine's one pcscd share a worker.
pytest: setup
	$(BIN)/pytest -q -n 2 --dist loadgroup

# Re-pin every dependency after changing pyproject.toml: resolves in a scratch venv.
lock:
	rm -rf .lockvenv && python3 -m venv .lockvenv
	.lockvenv/bin/pip install -q --upgrade pip setuptools
	.lockvenv/bin/pip install -q -e '.[dev]'
	.lockvenv/bin/pip freeze --all --exclude-editable | grep -v '^-e' > constraints.txt
	rm -rf .lockvenv

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
