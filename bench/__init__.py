"""The benchmark (bench/README.md): run it as `python -m bench.run_benchmark` from the repository
root."""
