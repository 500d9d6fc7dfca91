"""Reading and validating a runtime bundle folder.

A bundle (written by ``m6-fashion export onnx``) holds::

    bundle.json            format, format_version, geometry, canvases, default_size, special_token_ids,
                           scheduler, files, sha256
    image_encoder.onnx     pixels (B, 3, S, S) in [-1, 1] -> tokens (B, h, w, M) int64 ((B, 3, Sh, Sw) for a
                           non-square grid)
    image_decoder.onnx     tokens (B, h, w, M) int64 -> pixels (B, 3, S, S) in [-1, 1]
    image_decoder_hr.onnx  optional, tokens (B, h, w, M) int64 -> pixels (B, 3, D, D), D > S (the pipeline's decoder_hr)
    transformer.onnx       one SMART pass: 5 layout tensors -> logits (B, N, M, K)
    transformer.int8.onnx  optional, dynamic int8 quantisation of transformer.onnx
    transformer_prefix.onnx, transformer_target.onnx
                           optional (format 3, models whose prefix never attends to the target): the pass
                           split at the prefix; the prefix graph runs once per call, the target graph
                           (image_codes (B, N, M) + prefix keys/values -> log_probs (B, N, M, K)) every pass
    transformer_target.int8.onnx
                           optional, int8 quantisation of transformer_target.onnx
    transformer.weights, transformer.int8.weights
                           format 3: the weights the transformer graphs of one precision share
    tokenizer.json         caption tokenizer (``tokenizers`` library)

Format 4 bundles also record ``image_grid_max``: the image encoder and decoders take token grids of any
``rows`` x ``cols`` from ``grid_size`` to ``image_grid_max`` cells (pixels: 4x that at the encoder's cell), which
outpainting onto a canvas larger than the decoder's square needs; older bundles take the square only (0).

Format 5 bundles hold a model with a non-square token grid (e.g. 16 x 12 for 3:4 photos): the geometry adds
``grid_height`` and ``grid_width`` (rows and columns; ``grid_size`` is the longer, ``num_image_tokens`` their
product) and ``sample_height`` / ``sample_width`` (the pixels the image encoder reads); each canvas is named by its
longest side and is ``grid_height`` x ``grid_width`` cells. Their image graphs take ``rows`` from ``grid_height``
to ``grid_height * image_grid_max / grid_size`` and ``cols`` likewise (each side up to twice the model's). In
older bundles these keys are absent and default to ``grid_size`` / ``sample_size`` (a square grid).

``canvases`` maps each decoder's file key to the side of the square it paints, the longest side of the canvas
for a non-square grid (``{"image_decoder": 64, "image_decoder_hr": 256}``); ``default_size`` is
``{"height": ..., "width": ...}`` of the output made when none is given. Format version 1 bundles have neither:
their only canvas is the ``sample_size`` square.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from m6_fashion_core import validation
from m6_fashion_core.outpainting import image_grid_max_shape

from .canvas import default_size as canvas_default_size

BUNDLE_FORMAT = "m6-fashion-runtime-bundle"
# 2: canvases, default_size, image_decoder_hr; 3: split transformer, shared weights; 4: image graphs with free grid
# sides (image_grid_max) for outpainting beyond the canvas; 5: a non-square token grid (GRID_SHAPE_KEYS)
SUPPORTED_FORMAT_VERSIONS = (1, 2, 3, 4, 5)
NONSQUARE_FORMAT_VERSION = 5
BUNDLE_JSON = "bundle.json"
REQUIRED_FILES = ("image_encoder", "image_decoder", "transformer", "tokenizer")
SPLIT_KEYS = ("transformer_prefix", "transformer_target")
BASE_DECODER = "image_decoder"  # paints the sample_size square; other canvases come from other decoder graphs
GEOMETRY_KEYS = (
    "sample_size", "grid_size", "num_groups", "codebook_size", "num_image_tokens",
    "max_text_length", "max_condition_tokens", "max_position_embeddings", "vocab_size",
)
# geometry of a non-square grid (format 5; older bundles: grid_size / sample_size)
GRID_SHAPE_KEYS = ("grid_height", "grid_width", "sample_height", "sample_width")
SPECIAL_TOKENS = ("pad", "unk", "sep", "eov", "eot", "img", "mask")
REEXPORT_HINT = "re-create the bundle with `m6-fashion export onnx --model PIPELINE_DIR --out BUNDLE_DIR`"


class BundleError(ValueError):
    """The bundle folder is malformed (bad bundle.json, unsupported format version, inconsistent geometry)."""


class BundleFileNotFoundError(FileNotFoundError):
    """A file the bundle needs is missing."""


@dataclass
class Geometry:
    sample_size: int
    grid_size: int
    num_groups: int
    codebook_size: int
    num_image_tokens: int
    max_text_length: int
    max_condition_tokens: int
    max_position_embeddings: int
    vocab_size: int
    grid_height: Optional[int] = None  # rows of the token grid; None (a square grid): grid_size
    grid_width: Optional[int] = None  # columns; None: grid_size
    sample_height: Optional[int] = None  # pixels the image encoder reads; None: the canvas of the grid (sample_size square)
    sample_width: Optional[int] = None

    def __post_init__(self):
        if self.grid_height is None:
            self.grid_height = self.grid_size
        if self.grid_width is None:
            self.grid_width = self.grid_size
        cell = self.cell if isinstance(self.grid_size, int) and self.grid_size > 0 else 0  # a bad grid is reported later
        if self.sample_height is None:
            self.sample_height = self.grid_height * cell if cell else self.sample_size
        if self.sample_width is None:
            self.sample_width = self.grid_width * cell if cell else self.sample_size

    @property
    def cell(self) -> int:
        """Pixels per token cell on the sample_size canvas (the high-resolution canvas has its own, see canvas.py)."""
        return self.sample_size // self.grid_size

    @property
    def grid_shape(self) -> Tuple[int, int]:
        """``(rows, cols)`` of the token grid (``(grid_size, grid_size)`` for a square model)."""
        return self.grid_height, self.grid_width

    @property
    def sample_shape(self) -> Tuple[int, int]:
        """``(height, width)`` in pixels of what the image encoder reads (``(sample_size, sample_size)`` when square)."""
        return self.sample_height, self.sample_width

    @property
    def is_square(self) -> bool:
        return self.grid_height == self.grid_width

    @property
    def mask_code(self) -> int:
        return self.codebook_size


@dataclass
class Bundle:
    """A validated bundle: paths of its files and its configuration."""

    root: str
    format_version: int
    geometry: Geometry
    special_token_ids: Dict[str, int]
    scheduler: Dict[str, object]
    files: Dict[str, str] = field(default_factory=dict)
    sha256: Dict[str, str] = field(default_factory=dict)
    canvases: Dict[str, int] = field(default_factory=dict)  # decoder file key -> canvas side, base decoder first
    default_size: Tuple[int, int] = (0, 0)  # (height, width)
    image_grid_max: int = 0  # largest grid side the image graphs take (format 4); 0: only the model's grid

    @property
    def image_grid_max_shape(self) -> Tuple[int, int]:
        """``(rows, cols)`` limits of the grids the image graphs take: ``image_grid_max`` for both sides of a square
        grid, each side scaled by ``image_grid_max / grid_size`` for a non-square one; ``(0, 0)`` before format 4."""
        if not self.image_grid_max:
            return 0, 0
        return image_grid_max_shape(self.geometry.grid_shape, self.geometry.grid_size, self.image_grid_max)

    def canvas_sides(self) -> List[int]:
        """Sides of the squares the bundle's decoders paint (longest sides, for a non-square grid): ``sample_size``
        first, then larger ones."""
        return sorted(self.canvases.values())

    def decoder_for(self, side: int) -> str:
        """The file key of the decoder graph that paints the canvas of longest side ``side``."""
        for key, s in self.canvases.items():
            if s == side:
                return key
        raise ValueError(f"no decoder of the bundle paints a {side}x{side} canvas; it has {self.canvas_sides()}")

    def path(self, key: str) -> str:
        if key not in self.files:
            raise BundleFileNotFoundError(
                f"the bundle {self.root!r} has no {key!r} entry in {BUNDLE_JSON} (it lists {sorted(self.files)}); {REEXPORT_HINT}"
                + (" --int8" if key.startswith("transformer") and "int8" in key else "")
            )
        return os.path.join(self.root, self.files[key])

    @property
    def has_int8(self) -> bool:
        key = "transformer_target_int8" if self.has_split else "transformer_int8"
        return key in self.files and os.path.isfile(os.path.join(self.root, self.files[key]))

    @property
    def has_split(self) -> bool:
        """The bundle has the pass split at the prefix (prefix graph once per call, target graph every pass)."""
        return all(k in self.files for k in SPLIT_KEYS)

    def verify_checksums(self) -> None:
        """Compares every file with the sha256 recorded at export; raises ``BundleError`` on a mismatch."""
        for key, digest in self.sha256.items():
            h = hashlib.sha256()
            with open(self.path(key), "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            if h.hexdigest() != digest:
                raise BundleError(f"{self.files[key]} in {self.root!r} does not match the checksum recorded in {BUNDLE_JSON} (corrupted or replaced); {REEXPORT_HINT}")


def _int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BundleError(f"{BUNDLE_JSON}: {name} must be an integer; got {value!r}")
    return value


def load_bundle(root: str) -> Bundle:
    """Reads ``root/bundle.json``, checks the format version, the geometry and that every file exists.

    Raises ``BundleFileNotFoundError`` (a ``FileNotFoundError``) for a missing folder or file and
    ``BundleError`` (a ``ValueError``) for an unsupported format version or a malformed ``bundle.json``.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise BundleFileNotFoundError(f"bundle folder {root!r} does not exist; {REEXPORT_HINT}")
    cfg_path = os.path.join(root, BUNDLE_JSON)
    if not os.path.isfile(cfg_path):
        raise BundleFileNotFoundError(f"{root!r} is not a runtime bundle: {BUNDLE_JSON} is missing; {REEXPORT_HINT}")
    try:
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
    except json.JSONDecodeError as e:
        raise BundleError(f"{cfg_path} is not valid JSON ({e}); {REEXPORT_HINT}") from None
    if not isinstance(cfg, dict):
        raise BundleError(f"{cfg_path} must hold a JSON object; got {type(cfg).__name__}")
    if cfg.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{cfg_path}: format is {cfg.get('format')!r}, expected {BUNDLE_FORMAT!r}; {REEXPORT_HINT}")
    version = cfg.get("format_version")
    if version not in SUPPORTED_FORMAT_VERSIONS or isinstance(version, bool):
        from . import __version__

        raise BundleError(
            f"{cfg_path}: bundle format version {version!r} is not supported by m6-fashion-runtime {__version__} "
            f"(supported: {', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))}); {REEXPORT_HINT} with a matching "
            "version of the repository, or install a matching m6-fashion-runtime"
        )
    for key in ("geometry", "special_token_ids", "scheduler", "files"):
        if not isinstance(cfg.get(key), dict):
            raise BundleError(f"{cfg_path}: missing or malformed {key!r} section; {REEXPORT_HINT}")
    geo = cfg["geometry"]
    missing = [k for k in GEOMETRY_KEYS if k not in geo]
    if missing:
        raise BundleError(f"{cfg_path}: geometry lacks {missing}; {REEXPORT_HINT}")
    geometry = Geometry(**{k: _int(geo[k], f"geometry.{k}") for k in GEOMETRY_KEYS})
    _read_grid_shape(geo, geometry, version, cfg_path)
    special = cfg["special_token_ids"]
    missing = [k for k in SPECIAL_TOKENS if k not in special]
    if missing:
        raise BundleError(f"{cfg_path}: special_token_ids lacks {missing}")
    special = {k: _int(special[k], f"special_token_ids.{k}") for k in SPECIAL_TOKENS}
    scheduler = dict(cfg["scheduler"])
    mismatches = validation.component_mismatches(
        grid_size=geometry.grid_size, codebook_size=geometry.codebook_size, num_groups=geometry.num_groups,
        vocab_size=geometry.vocab_size, mask_code=scheduler.get("mask_token_id"), sample_size=geometry.sample_size,
        num_image_tokens=geometry.num_image_tokens, special_token_ids=special, grid_shape=geometry.grid_shape,
    )
    if mismatches:
        raise BundleError(f"{cfg_path}: the model's parts do not fit together: {'; '.join(mismatches)}; {REEXPORT_HINT}")
    from .scheduler import SMARTSampler

    try:  # a bad schedule is refused here, naming the file, not at the first call
        SMARTSampler.from_config({"mask_token_id": geometry.codebook_size, **scheduler})
    except (TypeError, ValueError) as e:
        raise BundleError(f"{cfg_path}: scheduler section: {e}; {REEXPORT_HINT}") from None
    files = {k: str(v) for k, v in cfg["files"].items()}
    lacking = [k for k in REQUIRED_FILES if k not in files]
    if lacking:
        raise BundleError(f"{cfg_path}: files lacks entries for {lacking}; {REEXPORT_HINT}")
    for key in files:  # every listed file (optional graphs, shared weights) is inside the folder and present
        _check_file(root, files, key, cfg_path)
    if any(k in files for k in SPLIT_KEYS) and not all(k in files for k in SPLIT_KEYS):
        raise BundleError(f"{cfg_path}: files lists only one of {list(SPLIT_KEYS)}; the split pass needs both; {REEXPORT_HINT}")
    canvases, default = _read_canvases(cfg, root, version, geometry, files)
    grid_max = _int(cfg.get("image_grid_max", 0), "image_grid_max") if version >= 4 else 0
    if grid_max and grid_max < geometry.grid_size:
        raise BundleError(f"{cfg_path}: image_grid_max {grid_max} is below grid_size {geometry.grid_size}; {REEXPORT_HINT}")
    return Bundle(
        root=root,
        format_version=version,
        geometry=geometry,
        special_token_ids=special,
        scheduler=scheduler,
        files=files,
        sha256={k: str(v) for k, v in (cfg.get("sha256") or {}).items() if k in files},
        canvases=canvases,
        default_size=default,
        image_grid_max=grid_max,
    )


def _read_grid_shape(geo: dict, geometry: Geometry, version: int, cfg_path: str) -> None:
    """Fills ``geometry``'s grid rows / cols and sample height / width from ``geo`` (format 5 must have them; older
    formats may not, and then describe the ``grid_size`` square) and checks them against the rest."""
    present = [k for k in GRID_SHAPE_KEYS if k in geo]
    if version >= NONSQUARE_FORMAT_VERSION and len(present) != len(GRID_SHAPE_KEYS):
        missing = [k for k in GRID_SHAPE_KEYS if k not in geo]
        raise BundleError(f"{cfg_path}: geometry lacks {missing} (bundle format {version}); {REEXPORT_HINT}")
    if not present:
        return
    values = {k: _int(geo[k], f"geometry.{k}") for k in present}
    for key, value in values.items():
        if value < 1:
            raise BundleError(f"{cfg_path}: geometry.{key} must be a positive integer; got {value}; {REEXPORT_HINT}")
    g = geometry.grid_size
    rows, cols = values.get("grid_height", g), values.get("grid_width", g)
    if g < 1:  # component_mismatches names the bad grid_size
        geometry.grid_height, geometry.grid_width = rows, cols
        return
    cell = geometry.cell
    expected = (rows * cell, cols * cell)
    got = (values.get("sample_height", expected[0]), values.get("sample_width", expected[1]))
    if got != expected:
        raise BundleError(
            f"{cfg_path}: geometry sample_height x sample_width {got[0]}x{got[1]} is not the {rows}x{cols} grid at "
            f"{cell}-px cells ({expected[0]}x{expected[1]}); {REEXPORT_HINT}"
        )
    geometry.grid_height, geometry.grid_width = rows, cols
    geometry.sample_height, geometry.sample_width = got


def _read_canvases(cfg: dict, root: str, version: int, geometry: Geometry, files: Dict[str, str]) -> Tuple[Dict[str, int], Tuple[int, int]]:
    """``canvases`` (decoder file key -> side, base decoder first) and ``default_size`` (height, width) of a
    bundle, checked against the geometry and the decoder files; version 1: the ``sample_size`` square only."""
    cfg_path = os.path.join(root, BUNDLE_JSON)
    s, g, grid = geometry.sample_size, geometry.grid_size, geometry.grid_shape
    if version == 1:
        return {BASE_DECODER: s}, (s, s)
    raw = cfg.get("canvases")
    if not isinstance(raw, dict) or not raw:
        raise BundleError(f"{cfg_path}: missing or malformed 'canvases' section (decoder file key -> canvas side); {REEXPORT_HINT}")
    canvases = {k: _int(v, f"canvases.{k}") for k, v in raw.items()}
    if canvases.get(BASE_DECODER) != s:
        raise BundleError(f"{cfg_path}: canvases.{BASE_DECODER} must be the sample_size {s}; got {canvases.get(BASE_DECODER)!r}")
    for key, side in canvases.items():
        if key not in files:
            raise BundleError(f"{cfg_path}: canvases names {key!r} but files has no such entry; {REEXPORT_HINT}")
        if key != BASE_DECODER and (side <= s or side % g):
            raise BundleError(
                f"{cfg_path}: canvas {key!r} side {side} must be a multiple of grid_size {g} larger than sample_size {s}"
            )
        _check_file(root, files, key, cfg_path)
    if len(set(canvases.values())) != len(canvases):
        raise BundleError(f"{cfg_path}: two decoders paint the same canvas side: {canvases}")
    ordered = dict(sorted(canvases.items(), key=lambda kv: kv[1]))
    size = cfg.get("default_size")
    if not isinstance(size, dict) or "height" not in size or "width" not in size:
        raise BundleError(f"{cfg_path}: missing or malformed 'default_size' section ({{\"height\": H, \"width\": W}}); {REEXPORT_HINT}")
    default = (_int(size["height"], "default_size.height"), _int(size["width"], "default_size.width"))
    expected = canvas_default_size(list(ordered.values()), grid)
    if default != expected:
        raise BundleError(
            f"{cfg_path}: default_size {default[1]}x{default[0]} (width x height) is not the default of canvases "
            f"{list(ordered.values())} on a {grid[0]}x{grid[1]} grid ({expected[1]}x{expected[0]}); {REEXPORT_HINT}"
        )
    return ordered, default


def _check_file(root: str, files: Dict[str, str], key: str, cfg_path: str) -> None:
    """The file of entry ``key`` is a plain name inside the bundle folder and exists."""
    name = files[key]
    if os.path.isabs(name) or ".." in name.replace("\\", "/").split("/"):
        raise BundleError(f"{cfg_path}: file entry {key!r} = {name!r} must be a name inside the bundle folder")
    if not os.path.isfile(os.path.join(root, name)):
        raise BundleFileNotFoundError(f"the bundle {root!r} is incomplete: {name} ({key}) is missing; {REEXPORT_HINT}")
