"""Pure domain: units, markets, positions, exits, fees, calldata, requests, records; no I/O."""
