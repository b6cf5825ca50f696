# Anomaly Detector - QGIS Processing plugin.
# Targets: setup test bench batch demo deploy package clean
SHELL := /bin/bash
.DEFAULT_GOAL := test

PLUGIN      := anomaly_detector
VENV        := $(CURDIR)/.venv
PY          := $(VENV)/bin/python
BUILD       := $(CURDIR)/build
PYPATH      := $(BUILD)/pythonpath
STAMP       := $(BUILD)/.setup-done
SITE        := $(VENV)/lib/python3.11/site-packages
APT_PKGS    := qgis python3-qgis qgis-providers python3-gdal gdal-bin python3-scipy python3-venv xvfb xauth
VERSION     := $(shell sed -n 's/^version=//p' metadata.txt)
ZIP         := $(BUILD)/$(PLUGIN)-$(VERSION).zip
# Files and folders that go into the plugin ZIP (nothing for development: model/training,
# the detector's training and evaluation, is imported by nothing that runs in QGIS).
PKG_FILES   := __init__.py plugin.py provider.py deps.py metadata.txt LICENSE README.md triage \
               algorithms model weights resources
PKG_EXCLUDE := __pycache__ '*.pyc' '*.aux.xml' '*.checkpoint.pt' model/training

# Environment shared by tests, demo and qgis_process calls: headless Qt and a
# private QGIS profile so that nothing touches the user's settings.
export QT_QPA_PLATFORM        := offscreen
export QGIS_CUSTOM_CONFIG_PATH := $(BUILD)/qgis-config
export XDG_RUNTIME_DIR        := $(BUILD)/xdg-runtime
export PYTHONPATH             := $(PYPATH):$(SITE)
export QGIS_PLUGINPATH        := $(PYPATH)

.PHONY: setup test fuzz bench batch demo train evaluate deploy package clean dirs

setup: $(STAMP) dirs

# apt packages are installed only when missing (root or sudo); the venv is
# created from Debian's Python so that it sees qgis and osgeo.
$(STAMP): requirements-dev.txt
	@missing=""; for p in $(APT_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi; \
	  $$SUDO apt-get update && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y --no-install-recommends $$missing; \
	fi
	test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q -r requirements-dev.txt
	mkdir -p $(BUILD)
	touch $@

dirs:
	@mkdir -p $(PYPATH) $(QGIS_CUSTOM_CONFIG_PATH) $(XDG_RUNTIME_DIR)
	@chmod 700 $(XDG_RUNTIME_DIR)
	@ln -sfn $(CURDIR) $(PYPATH)/$(PLUGIN)

test: setup
	$(PY) -m pytest -q tests

# A longer fuzz run of anomaly:detect and anomaly:rx on random small rasters
# (make test runs a few cases with a fixed seed). FUZZ_SEED picks another sequence.
FUZZ_CASES ?= 200
FUZZ_SEED  ?= 20240501
fuzz: setup dirs
	FUZZ_CASES=$(FUZZ_CASES) FUZZ_SEED=$(FUZZ_SEED) $(PY) -m pytest -q tests/test_fuzz.py

# Throughput and peak memory of anomaly:detect, anomaly:rx and anomaly:polygonize on
# generated rasters, through the Python API and whole qgis_process runs (needs ~8 GB free
# under build/; BENCH_ARGS=--quick skips the > 3 GB raster and shrinks the qgis_process
# cases; BENCH_ARGS="--paths api" or "--paths qgis_process" measures one path).
bench: setup dirs
	$(PY) tools/bench.py $(BENCH_ARGS)

# Score many rasters on a Dask cluster: make batch INPUTS="a.tif 'dir/*.tif'" OUT=results
# [WORKERS=2] [SCHEDULER=tcp://host:8786] [BATCH_ARGS="--threshold 0.01"]
# (an area of interest: BATCH_ARGS="--mask fields.gpkg --extent=xmin,ymin,xmax,ymax,EPSG")
WORKERS ?= 2
batch: setup dirs
	@test -n "$(INPUTS)" -a -n "$(OUT)" || { echo 'usage: make batch INPUTS="a.tif dir/*.tif" OUT=folder'; exit 2; }
	$(PY) -m $(PLUGIN).model.batch $(INPUTS) --out $(OUT) --workers $(WORKERS) \
	  $(if $(SCHEDULER),--scheduler $(SCHEDULER)) $(BATCH_ARGS)

demo: setup
	PYTHON=$(PY) tools/demo.sh

# Train the bundled detector (CPU by default; a GPU is used when present).
# Reproduces weights/detector.pt: same data, seed and steps (see weights/MODEL.md).
SHARED_DATA ?= $(abspath $(CURDIR)/../shared/data)
TRAIN_DATA  ?= $(SHARED_DATA)/train $(SHARED_DATA)/train_extra
TRAIN_STEPS ?= 6000
TRAIN_SCHEDULE ?= 6000
TRAIN_OUT   ?= $(CURDIR)/weights/detector.pt
train: setup
	$(PY) -m $(PLUGIN).model.training.train --data $(TRAIN_DATA) --steps $(TRAIN_STEPS) \
	  --schedule-steps $(TRAIN_SCHEDULE) --out $(TRAIN_OUT) --validate $(SHARED_DATA)/dev \
	  $(if $(RESUME),--resume $(RESUME)) $(TRAIN_ARGS)

# Pixel ROC AUC and object R-precision / recall / hit@1 of the bundled detector (run as
# anomaly:detect runs it) and of RX, local RX and local contrast, with bootstrap intervals;
# maps in build/evaluation/maps/<method>/. SCALE=2 or 4 evaluates the detector's coarser analysis scales
# (into build/evaluation-scale<N>); PRECISION=auto scores with anomaly:detect's default
# arithmetic on this CPU (float32 by default: the same figures on every machine);
# EVALUATE_ARGS adds options (e.g. --limit 2).
DATA  ?= $(SHARED_DATA)/dev
SCALE ?= 1
PRECISION ?= float32
evaluate: setup
	$(PY) -m $(PLUGIN).model.training.evaluate $(DATA) --scale $(SCALE) --precision $(PRECISION) \
	  --out $(BUILD)/evaluation$(if $(filter-out 1,$(SCALE)),-scale$(SCALE)) $(EVALUATE_ARGS)

# Install the packaged plugin into a QGIS profile (default: the user's default
# profile) and enable it for qgis_process. Override QGIS_PROFILES / QGIS_PROFILE.
QGIS_PROFILES ?= $(HOME)/.local/share/QGIS/QGIS3
QGIS_PROFILE  ?= default
deploy: package
	dest="$(QGIS_PROFILES)/profiles/$(QGIS_PROFILE)/python/plugins"; \
	mkdir -p "$$dest" && rm -rf "$$dest/$(PLUGIN)" && \
	/usr/bin/python3 -m zipfile -e $(ZIP) "$$dest" && \
	echo "Installed $(PLUGIN) $(VERSION) into $$dest"
	env -u QGIS_PLUGINPATH QGIS_CUSTOM_CONFIG_PATH="$(QGIS_PROFILES)" \
	  qgis_process.bin plugins enable $(PLUGIN) >/dev/null 2>&1 || true
	@echo "Enabled for qgis_process (profile $(QGIS_PROFILE)). In QGIS desktop enable it in Plugins > Manage and Install Plugins."

package:
	rm -rf $(BUILD)/package && mkdir -p $(BUILD)/package/$(PLUGIN)
	set -o pipefail; tar -cf - $(addprefix --exclude=,$(PKG_EXCLUDE)) $(PKG_FILES) | tar -xf - -C $(BUILD)/package/$(PLUGIN)
	rm -f $(ZIP) && cd $(BUILD)/package && /usr/bin/python3 -m zipfile -c $(ZIP) $(PLUGIN)
	@echo "Wrote $(ZIP)"

clean:
	rm -rf $(BUILD) demo-output .qgis-settings .pytest_cache
	rm -f resources/*.aux.xml
	find . -name __pycache__ -prune -not -path './.venv/*' -exec rm -rf {} +
