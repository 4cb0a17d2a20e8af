# The two front-door commands: `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench gpu-check clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/sluice demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/embed_throughput.py
	$(BIN)/python bench/modalities.py
	$(BIN)/python bench/front_doors.py
	$(BIN)/python bench/bus_events.py
	$(BIN)/python bench/openai_batch.py
	$(BIN)/python bench/training.py
	$(BIN)/python bench/training_defaults.py
	$(BIN)/python bench/generation.py
	$(BIN)/python bench/reading.py
	$(BIN)/python bench/long_inputs.py
	$(BIN)/python bench/vision.py
	$(BIN)/python bench/explain_text.py
	$(BIN)/python bench/result_cache.py
	$(BIN)/python bench/object_store.py
	$(BIN)/python bench/pii_quality.py
	$(BIN)/python bench/million_rows.py --parts submit,export,latency

# On a machine with a CUDA GPU only (at most 8 minutes): items/s, batch fill, GPU utilisation.
gpu-check: $(STAMP)
	bash bench/gpu_check.sh

clean:
	rm -rf $(VENV) .sluice .pytest_cache .mypy_cache .ruff_cache
