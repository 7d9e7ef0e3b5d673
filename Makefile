# Each target sets up its own virtual environment, so a fresh clone needs only Python 3.10+.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test run wheel-check gpu-check clean browser

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch 2.13.0 lies on disk here; installing it first keeps
	# pip from resolving "torch" to a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	# The example candidate package, so its entry point is there for tests and for trying it out.
	$(PY) -m pip install -q --no-deps -e examples/my_layers
	touch $(STAMP)

test: $(STAMP) browser
	$(PY) -m pytest -q -n auto --dist loadgroup

# The report's browser test drives the distribution's Chromium and chromedriver;
# install them where this runs as root with apt, and go on without them elsewhere
# (the test then skips, saying why).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 && echo "installed chromium for the browser test"; } || \
	echo "no chromium: the report's browser test will skip"

run: $(STAMP)
	$(VENV)/bin/gradcheck run

# Build the wheel, install it into a fresh virtualenv and run the installed suites
# against the example candidate from an empty folder, as a user without a clone does.
wheel-check: $(STAMP)
	PYTHON=$(PY) scripts/wheel_check.sh

# On a GPU machine with torch already installed: no virtualenv, no network.
gpu-check:
	PYTHONPATH=. $(PYTHON) scripts/gpu_check.py

clean:
	rm -rf $(VENV) build *.egg-info
