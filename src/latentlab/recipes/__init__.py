"""Decomposer objectives (recipes) and the commands that train decomposers."""
