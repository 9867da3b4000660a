.PHONY: test demo

# make test ARGS="tests/integration -q"
test:
	bash scripts/test.sh $(ARGS)

# make demo ARGS="--port 8001"
demo:
	bash scripts/demo.sh $(ARGS)
