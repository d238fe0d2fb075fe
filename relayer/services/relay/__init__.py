"""The relayer: nonces, signing, journaling, submission, replacement, recovery."""
