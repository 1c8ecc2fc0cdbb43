"""Peer implementations measured by the benchmarks (SB3-contrib TRPO)."""
