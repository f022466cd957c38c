"""Helpers shared by the test suite: a private Redis server and deadline-based waiting."""
