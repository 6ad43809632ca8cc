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

# The whole pipeline on the synthetic operando cell, about a quarter of an hour on a laptop CPU:
# generate 25 scans -> train the small network on their sparse hand labels -> segment all
# scans out of core -> analyse the segmentations (tables, figures, report.html) -> score the
# segmentation on the 18 scans training never saw, against their full labels.
# Each step runs when its input is newer than its output, so a second `make demo` is quick.
demo: $(DEMO_DIR)/analysis/report.html $(DEMO_DIR)/evaluation/evaluation.txt
	@cat $(DEMO_DIR)/evaluation/evaluation.txt
	@echo "demo outputs in $(DEMO_DIR): synthetic/ (scans, truth.json, preview.png), train/"
	@echo "  (checkpoints, metrics, overlays), predictions/ (labels, entropy, series.yaml),"
	@echo "  analysis/report.html (open it in a browser), evaluation/ (the tables above)"

$(DEMO_DIR)/synthetic/series.yaml: $(INSTALLED)
	$(BIN)/python synth.py out=$(DEMO_DIR)/synthetic

$(DEMO_DIR)/train/checkpoints/best.ckpt: $(DEMO_DIR)/synthetic/series.yaml
	rm -rf $(DEMO_DIR)/train
	$(BIN)/python train.py series=$(DEMO_DIR)/synthetic/series.yaml paths.root_dir=$(DEMO_DIR) \
		hydra.run.dir=$(DEMO_DIR)/train

$(DEMO_DIR)/predictions/series.yaml: $(DEMO_DIR)/train/checkpoints/best.ckpt
	$(BIN)/python predict.py ckpt=$(DEMO_DIR)/train/checkpoints/best.ckpt overwrite=true \
		series=$(DEMO_DIR)/synthetic/series.yaml out=$(DEMO_DIR)/predictions paths.root_dir=$(DEMO_DIR)

$(DEMO_DIR)/analysis/report.html: $(DEMO_DIR)/predictions/series.yaml
	$(BIN)/python analyze.py series=$(DEMO_DIR)/predictions/series.yaml out=$(DEMO_DIR)/analysis \
		overwrite=true \
		paths.root_dir=$(DEMO_DIR)

$(DEMO_DIR)/evaluation/evaluation.txt: $(DEMO_DIR)/predictions/series.yaml
	$(BIN)/python evaluate.py predictions=$(DEMO_DIR)/predictions/series.yaml \
		truth=$(DEMO_DIR)/synthetic/series.yaml out=$(DEMO_DIR)/evaluation paths.root_dir=$(DEMO_DIR)

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
