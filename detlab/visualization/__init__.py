"""Boxes drawn on images: the drawing functions (:mod:`detlab.visualization.draw`), used by the
trainer's TensorBoard sample images and by ``tools/visualize.py`` (:mod:`detlab.visualization.cli`).
"""

from detlab.visualization.draw import (
    class_colors,
    draw_boxes,
    draw_instances,
    draw_on_tensor,
    to_display_image,
)

__all__ = ["class_colors", "draw_boxes", "draw_instances", "draw_on_tensor", "to_display_image"]
