"""Example workflows; each subpackage registers its step functions and workflows."""
