"""The run store: every Redis key and script of run data, behind one interface."""
