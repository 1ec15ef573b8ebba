# Shortcuts for the scripts the README describes.
.PHONY: run test lint lock clean

run:
	scripts/run

test:
	scripts/test $(PYTEST_ARGS)

lint:
	scripts/setup-venv
	.venv/bin/ruff check .

lock:
	scripts/lock

clean:
	rm -rf .venv instance build .pytest_cache
