"""Benchmarks run by `aidoor bench ...`; each module has run() and main() printing one JSON line."""
