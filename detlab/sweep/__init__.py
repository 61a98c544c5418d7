"""detlab.sweep."""
