"""Benchmarks and evaluations of Nanobanana, all through the same package the app uses."""
