"""detlab: a Detectron2-style object-detection research codebase.

Importing ``detlab`` is cheap and has no side effects beyond defining the package: subpackages
(``detlab.config``, ``detlab.data``, ``detlab.modeling``, ...) are imported explicitly.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
