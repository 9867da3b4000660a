.PHONY: test demo lock test-latest

# make test ARGS="tests/integration -q"
test:
	bash scripts/test.sh $(ARGS)

# make demo ARGS="--port 8001"
demo:
	bash scripts/demo.sh $(ARGS)

# Resolve requirements/dev.lock again (after a dependency change, or to take new releases).
lock:
	bash scripts/lock.sh

# The whole suite against the newest releases pyproject.toml allows, in a throwaway venv.
test-latest:
	bash scripts/test-latest.sh $(ARGS)
