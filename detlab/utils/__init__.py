"""Small, dependency-light helpers shared by every area (errors, registries, CLI, logging)."""
