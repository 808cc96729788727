"""Multi-recipe studies and the demo."""
