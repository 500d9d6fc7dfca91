"""Output sizes and where an output image sits on the canvas a decoder paints.

Each decoder paints a canvas from the token grid: `grid` x `grid` cells for a square model, `rows` x `cols` for a
non-square one (`grid=(rows, cols)`, e.g. 16 x 12 for 3:4 catalogue photos). A canvas is named by its longest
side `side` (the decoder's `sample_size`: the tokenizer's canvas, and the high-resolution decoder `decoder_hr`'s,
when present, a larger one); its cells are `side // max(rows, cols)` pixels square, so it is
`rows * cell` x `cols * cell` pixels (`canvas_shape`). An output of `height` x `width` pixels is the centred crop
of the smallest canvas that can make it; each side must be at least half the canvas's and leave margins of whole
token cells. Boxes are pixel boxes `(left, top, right, bottom)` on the output (PIL's crop convention) and map
outwards to whole token cells of the canvas.

`sides` below is always `[sample_size]` or `[sample_size, decoder_hr side]`, as `canvas_sides()` returns it;
`grid` is an int (square) or a `(rows, cols)` pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

Cells = Tuple[int, int, int, int]  # (top, left, height, width) in grid cells
Grid = Union[int, Tuple[int, int]]  # a square grid's side, or (rows, cols)

# how a pipeline or a bundle without `decoder_hr` gets larger sizes, named in the size error
NO_DECODER_HR_HINTS = {
    "pipeline": "load one that has it",
    "bundle": "export a pipeline that has one",
}


def crop_sides(side: int, grid: int) -> List[int]:
    """Output sides a `side`-pixel canvas axis of `grid` cells can make, ascending: centred crops of at least half
    the side whose margins are whole token cells, i.e. `side - 2 * k * (side // grid)` for k >= 0
    (`[128, 160, 192, 224, 256]` for 256 px, 16 cells)."""
    step = 2 * (side // grid)
    return sorted(range(side, side // 2 - 1, -step))


def grid_rows_cols(grid: Grid) -> Tuple[int, int]:
    """`(rows, cols)` of a grid given as an int side (square) or a `(rows, cols)` pair."""
    if isinstance(grid, (tuple, list)):
        rows, cols = grid
        return int(rows), int(cols)
    return int(grid), int(grid)


def grid_longest(grid: Grid) -> int:
    """The longest side of the grid in cells (`grid_size` of a model)."""
    return max(grid_rows_cols(grid))


def canvas_shape(side: int, grid: Grid) -> Tuple[int, int]:
    """`(height, width)` in pixels of the canvas whose longest side is `side`: `rows * cell` x `cols * cell` with
    `cell = side // max(rows, cols)` (`(side, side)` for a square grid; 256 on a 16 x 12 grid -> `(256, 192)`)."""
    rows, cols = grid_rows_cols(grid)
    cell = side // max(rows, cols)
    return rows * cell, cols * cell


def crop_sizes(side: int, grid: Grid) -> Tuple[List[int], List[int]]:
    """`(heights, widths)` the canvas of longest side `side` can make (`crop_sides` along each axis)."""
    (rows, cols), (h, w) = grid_rows_cols(grid), canvas_shape(side, grid)
    return crop_sides(h, rows), crop_sides(w, cols)


def portrait_width(side: int, grid: int) -> int:
    """The crop side nearest to 3/4 of `side` (the 3:4 portrait of a catalogue photo: 192 for 256)."""
    return min(crop_sides(side, grid), key=lambda v: abs(v - 0.75 * side))


def default_size(sides: Sequence[int], grid: Grid) -> Tuple[int, int]:
    """`(height, width)` made when none is given. A non-square grid: the whole largest canvas (its aspect ratio is
    the model's: 256x192 for a 16 x 12 grid painted at 16 px). A square grid: the 3:4 portrait of the largest
    canvas when there is more than one (a high-resolution decoder: 256x192 for the shipped model), else the square
    of the only one."""
    side = max(sides)
    rows, cols = grid_rows_cols(grid)
    if rows != cols:
        return canvas_shape(side, grid)
    if side == sides[0]:
        return side, side
    return side, portrait_width(side, rows)


def output_sizes(sides: Sequence[int], grid: Grid) -> List[Tuple[int, int]]:
    """Every `(height, width)` the canvases `sides` can make, sorted."""
    sizes = set()
    for side in sides:
        heights, widths = crop_sizes(side, grid)
        sizes.update((h, w) for h in heights for w in widths)
    return sorted(sizes)


def check_side_type(name: str, value) -> None:
    """Raises `TypeError` unless `value` is None or an integer (bool excluded) number of pixels."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
        raise TypeError(f"{name} must be an integer number of pixels; got {value!r}")


def complete_size(
    sides: Sequence[int], grid: Grid, height: Optional[int], width: Optional[int]
) -> Tuple[Optional[int], Optional[int]]:
    """Both sides of the output when at most one is given.

    None: the default size. One: on the smallest canvas that has the given side, the other is the crop side nearest
    to the default aspect ratio (ties: the smaller; `height=64` -> 48x64, `width=192` -> 192x256 with
    `decoder_hr`). `(height, width)` is returned unchanged (one `None`) when no canvas has the given side.
    """
    dh, dw = default_size(sides, grid)
    if height is None and width is None:
        return dh, dw
    if height is not None and width is not None:
        return height, width
    given, ratio = (height, dw / dh) if width is None else (width, dh / dw)
    for side in sorted(sides):
        heights, widths = crop_sizes(side, grid)
        cands, others = (heights, widths) if width is None else (widths, heights)
        if given in cands:
            other = min(others, key=lambda v: abs(v - given * ratio))
            return (given, other) if width is None else (other, given)
    return height, width


def size_error(
    sides: Sequence[int], grid: Grid, height: Optional[int], width: Optional[int], holder: str = "bundle"
) -> ValueError:
    """The error for a size no canvas can make, naming the accepted sides of each canvas; with a single canvas it
    says how the `holder` (`"pipeline"` or `"bundle"`) gets `decoder_hr`."""
    if height is not None and width is not None:
        asked = f"{width}x{height} (width x height)"
    else:
        asked = f"height={height}" if width is None else f"width={width}"
    rows, cols = grid_rows_cols(grid)

    def accepted(side: int) -> str:
        hr = " (decoder_hr)" if side != sides[0] else ""
        heights, widths = crop_sizes(side, grid)
        if rows == cols:
            return f"{side}x{side} canvas{hr}: height and width each in {heights}"
        h, w = canvas_shape(side, grid)
        return f"{w}x{h} canvas (width x height){hr}: height in {heights}, width in {widths}"

    listed = "; ".join(accepted(side) for side in sides)
    hint = "" if len(sides) > 1 else f" (this {holder} has no decoder_hr; {NO_DECODER_HR_HINTS[holder]} for larger sizes)"
    return ValueError(f"this model cannot make a {asked} image; accepted: {listed}{hint}")


@dataclass(frozen=True)
class OutputCanvas:
    """Where an output image sits on the canvas a decoder paints.

    The decoder paints `grid_shape` = `(rows, cols)` token cells of `cell = side // grid` pixels (`grid` =
    max(rows, cols); a square model: `side` x `side` pixels, `grid_rows` / `grid_cols` None); the output is the
    centred `height` x `width` crop. Boxes are pixel boxes on the output.
    """

    side: int
    grid: int
    height: int
    width: int
    grid_rows: Optional[int] = None  # None: `grid` (square)
    grid_cols: Optional[int] = None

    @classmethod
    def for_size(
        cls, sides: Sequence[int], grid: Grid, height: Optional[int] = None, width: Optional[int] = None, holder: str = "bundle"
    ) -> "OutputCanvas":
        """The canvas and crop for an output of `height` x `width` pixels on the smallest canvas of `sides` that
        can make it. Neither side given: `default_size`; one given: see `complete_size`. Raises `TypeError` for a
        non-integer side and `ValueError` naming the accepted sizes (`size_error`) when no canvas can make it."""
        check_side_type("height", height)
        check_side_type("width", width)
        height, width = complete_size(sides, grid, height, width)
        height = None if height is None else int(height)
        width = None if width is None else int(width)
        for side in sorted(sides):
            heights, widths = crop_sizes(side, grid)
            if height in heights and width in widths:
                return cls(side=side, height=height, width=width, **grid_fields(grid))
        raise size_error(sides, grid, height, width, holder)

    @property
    def grid_shape(self) -> Tuple[int, int]:
        """`(rows, cols)` of the token grid the decoder paints."""
        return (self.grid if self.grid_rows is None else self.grid_rows, self.grid if self.grid_cols is None else self.grid_cols)

    @property
    def cell(self) -> int:
        """Pixels per token cell on this canvas."""
        return self.side // self.grid

    @property
    def offset(self) -> Tuple[int, int]:
        """`(top, left)` of the output inside the canvas, in pixels: `((canvas height - height) // 2,
        (canvas width - width) // 2)` (`(side - height) // 2, ...` for a square canvas)."""
        ph, pw = self.canvas_shape
        return (ph - self.height) // 2, (pw - self.width) // 2

    @property
    def canvas_shape(self) -> Tuple[int, int]:
        """`(height, width)` in pixels of the decoder canvas: `grid_shape * cell` (`(side, side)` when square)."""
        rows, cols = self.grid_shape
        return rows * self.cell, cols * self.cell

    def box_to_cells(self, box: Sequence[int], name: str = "box") -> Cells:
        """Pixel box `(left, top, right, bottom)` on the output -> grid box `(top, left, height, width)`, rounded
        outwards: `top = (top + y0) // cell`, `bottom = ceil((bottom + y0) / cell)` (and so for left / right).
        Raises `ValueError` naming `name` (`image_box`, `reference_images[0] box`) for a malformed, empty or
        out-of-output box."""
        try:
            left, top, right, bottom = (int(round(float(v))) for v in box)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"{name} must be 4 finite numbers (left, top, right, bottom) in pixels; got {box!r}") from None
        w, h = self.width, self.height
        if not (0 <= left < right <= w and 0 <= top < bottom <= h):
            raise ValueError(
                f"{name} {box!r} is outside the {w}x{h} (width x height) output or empty; accepted: 0 <= left < right <= {w} "
                f"and 0 <= top < bottom <= {h} (pixels, PIL's (left, top, right, bottom) order)"
            )
        y0, x0 = self.offset
        c = self.cell
        t, l = (top + y0) // c, (left + x0) // c
        b, r = math.ceil((bottom + y0) / c), math.ceil((right + x0) / c)
        return t, l, b - t, r - l

    @property
    def painted(self) -> Tuple[int, int]:
        """`(height, width)` in pixels of what the decoder paints: the canvas (`side` x `side` when square)."""
        return self.canvas_shape

    def cells_mask(self, cells: Sequence[Cells], value: float, batch: int) -> np.ndarray:
        """float32 `(batch, 1, *painted)` filled with `1 - value`, with `value` on the given grid boxes."""
        m = np.full((batch, 1, *self.painted), 1.0 - value, dtype=np.float32)
        c = self.cell
        for top, left, h, w in cells:
            m[:, :, top * c : (top + h) * c, left * c : (left + w) * c] = value
        return m

    def upsample_cells(self, cells: np.ndarray) -> np.ndarray:
        """Cell mask `(B, rows * cols)` bool -> float32 pixel mask `(B, 1, *canvas_shape)` (each cell a `cell` x
        `cell` block)."""
        b, c = cells.shape[0], self.cell
        grid = cells.reshape(b, 1, *self.grid_shape)
        return grid.repeat(c, axis=2).repeat(c, axis=3).astype(np.float32)

    def crop(self, pixels):
        """`(B, C, *canvas_shape)` array or tensor -> `(B, C, height, width)`, the centred crop (a view)."""
        y0, x0 = self.offset
        return pixels[..., y0 : y0 + self.height, x0 : x0 + self.width]


def grid_fields(grid: Grid) -> dict:
    """`OutputCanvas` keyword arguments for a grid: `grid` (the longest side) and, when not square, `grid_rows` /
    `grid_cols`."""
    rows, cols = grid_rows_cols(grid)
    if rows == cols:
        return {"grid": rows}
    return {"grid": max(rows, cols), "grid_rows": rows, "grid_cols": cols}


def output_canvas(
    sides: Sequence[int], grid: Grid, height: Optional[int] = None, width: Optional[int] = None, holder: str = "bundle"
) -> OutputCanvas:
    """The canvas and crop for an output of `height` x `width` pixels (see `OutputCanvas.for_size`)."""
    return OutputCanvas.for_size(sides, grid, height, width, holder)
