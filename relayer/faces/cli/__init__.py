"""The `relayer` command line: argument parsing in, text out, errors mapped once."""
