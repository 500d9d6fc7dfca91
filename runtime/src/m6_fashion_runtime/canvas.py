"""Output sizes and where an output image sits on the canvas a decoder paints (see ``m6_fashion_core.canvas``).

Each decoder of a bundle paints a canvas from the token grid: ``side`` x ``side`` pixels from the ``grid`` x
``grid`` cells of a square model, ``rows * cell`` x ``cols * cell`` from the ``(rows, cols)`` grid of a non-square
one (``canvas_shape``; a canvas is named by its longest side ``side``). ``image_decoder`` paints the
``sample_size`` canvas; ``image_decoder_hr``, when present, a larger one. An output of ``height`` x ``width``
pixels is the centred crop of the smallest canvas that can make it. The size errors name the bundle
(``holder="bundle"``, the default of ``output_canvas``). ``grid`` is an int (square) or a ``(rows, cols)`` pair.
"""

from m6_fashion_core.canvas import (  # noqa: F401
    Cells,
    OutputCanvas,
    canvas_shape,
    complete_size as _complete_size,
    check_side_type as _check_side_type,
    crop_sides,
    crop_sizes,
    default_size,
    grid_rows_cols,
    output_canvas,
    output_sizes,
    portrait_width,
)

__all__ = [
    "Cells", "OutputCanvas", "canvas_shape", "crop_sides", "crop_sizes", "default_size", "grid_rows_cols", "output_canvas",
    "output_sizes", "portrait_width",
]
