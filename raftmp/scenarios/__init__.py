"""Shipped fault scenarios (CS3700 matrix), runnable with `python -m raftmp scenario`."""
