"""Converts a square M6-Fashion pipeline into a portrait (non-square grid) one that starts from the same weights.

The square models read a product photo padded on white to a square: a 3:4 photo at 64 x 64 px occupies the middle
48 columns, i.e. token columns 2..13 of the 16 x 16 grid, and the outer four columns are always white padding.
The portrait pipeline reads the photo at 64 x 48 px as a 16 x 12 grid and generates only those 192 tokens:

* image tokenizer: the same weights, `sample_height` x `sample_width` = 64 x 48 (the encoder is convolutional);
* decoders: unchanged (convolutional): `decoder` paints 64 x 48, `decoder_hr` 256 x 192;
* transformer: `grid_height` x `grid_width` = 16 x 12; the row position embeddings are kept, the column ones are
  the square model's columns `left .. left + cols - 1` (the columns the photo occupied); everything else is copied.

The result is a starting point for fine-tuning stage 2 on 16 x 12 token grids (`m6-fashion finetune --model OUT`),
not a finished model: the square transformer never saw a grid without its padding columns.

    python conversion/square_to_portrait.py --out runs/portrait/init [--model m6-fashion-hr] [--cols 12] [--left 2]
"""

from __future__ import annotations

import argparse
import copy
from typing import Optional

import torch


def portrait_pipeline(pipe, cols: int, left: Optional[int] = None):
    """A copy of the square `pipe` on a `grid_size` x `cols` grid (rows x cols), as described in the module
    docstring. `left` (default: centred) is the first square column kept. Raises `ValueError` for a pipeline that is
    not square or a column range outside its grid."""
    from m6_fashion import M6FashionPipeline, M6FashionTransformer, PQTokenizer

    tcfg = pipe.transformer.config
    rows, width = pipe.grid_shape
    if rows != width:
        raise ValueError(f"the pipeline's grid is already {rows}x{width} (rows x cols); give a square one")
    if not 1 <= cols < width:
        raise ValueError(f"cols must be between 1 and {width - 1} (the square grid has {width}); got {cols}")
    left = (width - cols) // 2 if left is None else left
    if not 0 <= left <= width - cols:
        raise ValueError(f"left must be between 0 and {width - cols} for {cols} of {width} columns; got {left}")
    cell = pipe.cell

    cfg = copy.deepcopy(tcfg)
    cfg.grid_height, cfg.grid_width, cfg.grid_size = rows, cols, rows
    transformer = M6FashionTransformer(cfg).to(pipe.transformer.dtype)
    state = pipe.transformer.state_dict()
    state["embeddings.col_embeddings.weight"] = state["embeddings.col_embeddings.weight"][left : left + cols].clone()
    transformer.load_state_dict(state, strict=True)

    qcfg = dict(pipe.image_tokenizer.config)
    qcfg = {k: v for k, v in qcfg.items() if not k.startswith("_")}
    qcfg.update(sample_height=rows * cell, sample_width=cols * cell)
    image_tokenizer = PQTokenizer(**qcfg).to(pipe.image_tokenizer.dtype)
    image_tokenizer.load_state_dict(pipe.image_tokenizer.state_dict(), strict=True)

    parts = dict(pipe.components)
    parts.update(transformer=transformer.eval(), image_tokenizer=image_tokenizer.eval())
    return M6FashionPipeline(**parts)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="square pipeline folder or name (default: the shipped model)")
    parser.add_argument("--out", required=True, help="folder of the portrait pipeline")
    parser.add_argument("--cols", type=int, default=12, help="columns of the portrait grid (default 12: 3:4 of 16)")
    parser.add_argument("--left", type=int, default=None, help="first square column kept (default: centred)")
    args = parser.parse_args(argv)

    from m6_fashion import M6FashionPipeline

    pipe = M6FashionPipeline.from_pretrained(args.model) if args.model else M6FashionPipeline.from_pretrained()
    out = portrait_pipeline(pipe, args.cols, args.left)
    with torch.no_grad():
        out.save_pretrained(args.out)
    print(f"portrait pipeline {out.grid_shape[0]}x{out.grid_shape[1]} (rows x cols), default size "
          f"{out.default_size[1]}x{out.default_size[0]} (width x height) -> {args.out}")


if __name__ == "__main__":
    main()
