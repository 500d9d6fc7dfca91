"""Output sizes and where an output image sits on the square a decoder paints (see ``m6_fashion_core.canvas``).

Each decoder of a bundle paints a ``side`` x ``side`` canvas from the ``grid`` x ``grid`` token grid
(``image_decoder``: the ``sample_size`` square; ``image_decoder_hr``, when present: a larger one). An output of
``height`` x ``width`` pixels is the centred crop of the smallest canvas that can make it. The size errors name
the bundle (``holder="bundle"``, the default of ``output_canvas``).
"""

from m6_fashion_core.canvas import (  # noqa: F401
    Cells,
    OutputCanvas,
    complete_size as _complete_size,
    check_side_type as _check_side_type,
    crop_sides,
    default_size,
    output_canvas,
    output_sizes,
    portrait_width,
)

__all__ = ["Cells", "OutputCanvas", "crop_sides", "default_size", "output_canvas", "output_sizes", "portrait_width"]
