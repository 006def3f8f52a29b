# Two commands do everything on a fresh machine: `make site` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PELICAN_OPTS ?=
HOST ?= 127.0.0.1
PORT ?= 8000

FIGGEN := $(BIN)/pelican-figgen

.PHONY: site test wheelhouse checkers serve publish bench lint clean figures-clean figures freeze verify

# The venv is rebuilt when the dependency declarations or the pins change. The plugin is
# installed with pip, as any blog installs it (editable here: its source lives in this repo).
$(BIN)/.installed: pyproject.toml plugins/pelican-figgen/pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e plugins/pelican-figgen -e ".[dev]"
	touch $@

site: $(BIN)/.installed  ## build output/ with every figure
	$(BIN)/pelican content -s pelicanconf.py $(PELICAN_OPTS)

publish: $(BIN)/.installed  ## build output/ with the publishing settings
	$(BIN)/pelican content -s publishconf.py $(PELICAN_OPTS)

serve: $(BIN)/.installed  ## preview at http://$(HOST):$(PORT), rebuilding on every edit
	$(BIN)/python -m pelican.plugins.figgen.serve --host $(HOST) --port $(PORT)

figures: $(BIN)/.installed  ## run every stale figure, without building the site
	$(FIGGEN) run

freeze: $(BIN)/.installed  ## copy every figure, up to date, into _freeze/ (to commit)
	$(FIGGEN) freeze

verify: $(BIN)/.installed  ## re-run every figure and compare it with its frozen image
	$(FIGGEN) verify

# Wheels of what the plugin's distribution declares (and setuptools, to build its own wheel),
# for this Python: tests/test_package.py installs the plugin into a fresh venv from them, offline.
WHEELHOUSE := .wheelhouse
$(WHEELHOUSE)/.complete: plugins/pelican-figgen/pyproject.toml constraints.txt | $(BIN)/.installed
	$(BIN)/python -c "import tomllib; print('\n'.join(tomllib.load(open('$<', 'rb'))['project']['dependencies']))" > $(WHEELHOUSE).txt
	$(BIN)/python -m pip download --quiet --only-binary=:all: -c constraints.txt -d $(WHEELHOUSE) -r $(WHEELHOUSE).txt "setuptools>=68"
	rm $(WHEELHOUSE).txt
	touch $@

wheelhouse: $(WHEELHOUSE)/.complete  ## wheels for the fresh-venv package test

# The Nu HTML checker (vnu.jar, run on Java) and axe-core, pinned in .ci/npm's lock file, for
# tests/test_validity.py. --ignore-scripts: vnu-jar's install script would download a Java.
CHECKERS := .ci/npm/node_modules
$(CHECKERS)/.complete: .ci/npm/package.json .ci/npm/package-lock.json
	npm ci --prefix .ci/npm --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

checkers: $(CHECKERS)/.complete  ## the HTML and accessibility checkers (needs npm; Java to run)

test: $(BIN)/.installed $(WHEELHOUSE)/.complete  ## the test suite
	$(BIN)/python -m pytest -q

lint: $(BIN)/.installed
	$(BIN)/ruff check .

bench: $(BIN)/.installed  ## pool vs serial, start-up overhead, rebuilds, restyles, memory, PGD
	$(BIN)/python bench/bench.py

clean:  ## drop output/ (the figure cache in .figgen-cache/ is kept)
	rm -rf output

figures-clean:  ## drop the figure cache too: the next build re-runs every figure (not _freeze/)
	rm -rf output .figgen-cache
