# Each target sets up what it needs: a virtual environment in .venv, made once and reused.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# test workers: one per core, at most 4 (each runs torch on one thread; see tests/conftest.py)
JOBS   ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)  ## the main job: the demo on the built-in digits
	$(BIN)/latentlab demo

test: $(STAMP)  ## the test suite
	$(BIN)/pytest -n $(JOBS) --dist loadscope

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)  ## speed benchmarks (installs the peer library they compare against)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	cd benchmarks && for b in peak engine_speed tokenizer_speed generator_speed families codec_rd; do \
		../$(BIN)/python $$b.py || exit 1; done

clean:
	rm -rf $(VENV) runs
