# The two quick-start commands: `make studio` (set up and open the studio) and `make test` (set up and test).
export GRADIO_ANALYTICS_ENABLED := False
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: setup studio test lint bench

setup:
	bash scripts/setup.sh

studio: setup
	.venv/bin/python launch.py

test:
	bash scripts/setup.sh --test
	.venv/bin/ruff check studio tests bench scripts launch.py
	.venv/bin/python -m pytest -q

lint:
	.venv/bin/ruff check studio tests bench scripts launch.py

bench: setup
	.venv/bin/python bench/bench_engine.py
