"""flyslice component."""
