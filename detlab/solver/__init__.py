"""detlab.solver."""
