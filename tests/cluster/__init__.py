"""Several `relayer serve` processes on one store and one anvil: the harness and the chaos tests."""
