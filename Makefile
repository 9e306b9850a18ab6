# The course's commands. `make help` lists them. Needs Python >= 3.10 (PYTHON=python3.11 to choose).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help course test lint format notebooks results student site gpu browser lock clean benchmark-moe benchmark-speculative

help:
	@echo "make course     set up .venv (pinned), install adaedu, open JupyterLab on notebooks/"
	@echo "make test       set up .venv if needed, then lint + unit tests + notebooks (smoke) + consistency"
	@echo "make notebooks  re-execute every notebook in the cpu profile and regenerate RESULTS.md"
	@echo "make results    regenerate RESULTS.md and the README's notebook table from results/cpu"
	@echo "make student    write student copies (solutions removed) to student/"
	@echo "make gpu        on a CUDA GPU: every notebook in the gpu profile, records in results/gpu/"
	@echo "make site       build the course website (offline, from the committed notebooks) into build/site/html"
	@echo "make format     apply ruff's formatting and safe fixes"
	@echo "make lock       re-pin requirements/constraints.txt from the current .venv"
	@echo "make benchmark-moe  time adaedu's MoE dispatch against loops and HF's Mixtral block (docs/benchmarks.md)"
	@echo "make benchmark-speculative  speculative vs plain sampling, measured vs theory (docs/benchmarks.md)"

$(STAMP): pyproject.toml requirements/constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "adaedu needs Python >= 3.10; run: make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt -e ".[course,dev,parity,site,browser]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (adaedu)" >/dev/null
	@touch $(STAMP)

# As root (Docker, Codespaces, CI) JupyterLab refuses to start without --allow-root.
JUPYTER_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)

course: $(STAMP)
	$(BIN)/jupyter lab notebooks/ $(JUPYTER_ROOT)

test: $(STAMP) lint browser
	$(BIN)/python -m pytest -n 2 --dist loadfile

# The browser tests drive the system's Chromium; as root on Debian / Ubuntu it is installed here
# where it is missing (elsewhere the script says how, and the tests skip unless CI=true).
browser:
	@bash scripts/ensure_browser.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

notebooks: $(STAMP)
	$(BIN)/adaedu run

results: $(STAMP)
	$(BIN)/adaedu results

student: $(STAMP)
	$(BIN)/adaedu student -o student

gpu: $(STAMP)
	$(BIN)/adaedu gpu

site: $(STAMP)
	$(BIN)/adaedu site

lock: $(STAMP)
	bash scripts/lock.sh

benchmark-moe: $(STAMP)
	$(BIN)/python benchmarks/moe_dispatch.py

benchmark-speculative: $(STAMP)
	$(BIN)/python benchmarks/speculative.py

clean:
	rm -rf $(VENV) student build dist *.egg-info .pytest_cache .ruff_cache
