"""Command-line entry points (`peerstack`, `peerstack-ring`): parse arguments, call library code."""
