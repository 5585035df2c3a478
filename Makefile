# Convenience wrappers around the scripts in packaging/ (the README's two commands).
.PHONY: demo test ci bench

demo:
	./packaging/quickstart.sh

test:
	./packaging/test.sh

ci:
	./.ci/run

bench:
	@echo "benchmarks: not written yet (see README, Benchmarks)" >&2; exit 1
