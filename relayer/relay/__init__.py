"""The relayer: signs, journals, submits, tracks and replaces transactions (see docs/relayer.md).

`RelayService` is the one core; the REST router (`relayer.api.relay_routes`) and the CLI (`relayer.relay.cli`)
only adapt arguments and results.
"""
