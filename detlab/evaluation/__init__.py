"""detlab.evaluation."""
