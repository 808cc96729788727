"""Building blocks shared by tokenizers and generators."""
