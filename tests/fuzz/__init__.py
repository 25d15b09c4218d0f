"""Fuzzing the CLI with mutated example manifests (issue 9, part 5)."""
