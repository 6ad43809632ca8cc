# The whole set-up is these targets: each creates .venv and installs the project when needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DEMO_DIR ?= outputs/demo

.PHONY: demo test lint format clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(INSTALLED)

# Generate the synthetic operando cell (25 scans) and summarise it: a table of per-scan class
# volumes on the console, volumes.csv, and preview.png (a cross-section with its labels).
demo: $(INSTALLED)
	$(BIN)/python synth.py out=$(DEMO_DIR)/synthetic
	@echo "demo outputs: $(DEMO_DIR)/synthetic (series.yaml, truth.json, volumes.csv, preview.png, tiff/)"

# The test command CI runs: lint, then the whole suite on CPU.
test: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	WANDB_MODE=offline MPLBACKEND=Agg $(BIN)/python -m pytest -q

format: $(INSTALLED)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) outputs logs .pytest_cache .ruff_cache
