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

# Generate the synthetic operando cell (25 scans) and summarise it (per-scan class volumes,
# preview.png), then train the small network on its sparse hand labels (about a minute on a CPU).
demo: $(INSTALLED)
	$(BIN)/python synth.py out=$(DEMO_DIR)/synthetic
	$(BIN)/python train.py series=$(DEMO_DIR)/synthetic/series.yaml paths.root_dir=$(DEMO_DIR)
	@echo "demo outputs: $(DEMO_DIR)/synthetic (series, truth.json, preview.png, tiff/)"
	@echo "              $(DEMO_DIR)/logs/train/<time>/ (checkpoints, metrics, overlays, split)"

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
