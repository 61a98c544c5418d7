"""``tools/diagnose.py``: find a broken environment, dataset or model before a long run.

Checks, in order: environment (Python, packages, NumPy 2 / torchvision mismatches, devices),
data (datasets registered, files present and decodable, classes vs NUM_CLASSES, instances per
class and size bucket, invalid boxes), transforms (mapper output dtype, shape, channels, value
range, boxes), model (build, parameters, FLOPs via fvcore, weights, one forward+backward),
overfit-one-batch (the loss falls by a set fraction within N steps) and DataLoader workers
(start-up, in-process fallback). :func:`run_diagnostics` returns a :class:`Report`.
"""

from detlab.diagnostics.core import FAIL, PASS, SKIP, WARN, Check, Report
from detlab.diagnostics.runner import run_diagnostics

__all__ = ["FAIL", "PASS", "SKIP", "WARN", "Check", "Report", "run_diagnostics"]
