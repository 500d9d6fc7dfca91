"""Every bad input gets a clear, early error, on all four surfaces.

A catalogue of distinct bad inputs (the module-level lists below; `test_the_catalogue_has_enough_distinct_cases`
prints the count per surface) for

* the Python API of `M6FashionPipeline` (tiny pipeline; refused before any image is encoded),
* the `m6-fashion` command line (in-process `main([...])`, plus real subprocesses: one `error: ...` line on
  stderr, a non-zero exit, no traceback, no file written or overwritten, no model loaded where the error does
  not need one),
* the torch-free runtime: `M6FashionRuntime`, bundle loading and the `m6-fashion-runtime` command line
  (tiny exported bundle),
* the studio's `Studio` handlers (`gr.Error` naming the field, the pipeline never called).

Each case asserts the error type and that the message names the argument, option or file concerned. The
property-based tests (hypothesis) check the pipeline's numeric arguments and boxes, and the image / mask
preprocessing of the pipeline and the runtime (any PIL mode and size, numpy and tensor layouts): valid inputs
work, invalid ones raise `ValueError` / `TypeError` naming the argument, never anything else.

These cases extend (never repeat) the bad-input tests of test_pipeline.py, test_pipeline_sizes.py, test_cli.py,
test_runtime.py and test_studio_browser.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple
from unittest import mock

import numpy as np
import PIL.Image
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import subprocess_env

REPO_ROOT = Path(__file__).resolve().parents[1]
RUNTIME_SRC = REPO_ROOT / "runtime" / "src"
if str(RUNTIME_SRC) not in sys.path:
    sys.path.insert(0, str(RUNTIME_SRC))

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
NAN, INF = float("nan"), float("inf")
PROMPT = "Men Navy Blue Casual Shirt"


def _img(w=48, h=64, mode="RGB", color=(200, 30, 30)):
    return PIL.Image.new(mode, (w, h), color if mode in ("RGB", "RGBA") else 128)


def _mask(w=48, h=64):
    m = PIL.Image.new("L", (w, h), 0)
    m.paste(255, (0, h // 2, w, h))
    return m


IMG, MASK = _img(), _mask()
ARR_MASK = np.asarray(MASK)


# ============================================================================================== the catalogue
@dataclass
class PipelineCase:
    id: str
    kwargs: Dict[str, Any]
    error: type
    match: str
    early: bool = True  # refused before any image is encoded or any token generated


def _bad_tokens_callback(kind):
    def cb(pipe, i, t, tensors):
        return [] if kind == "list" else {"tokens": torch.zeros(1, dtype=torch.long)}
    return cb


PIPELINE_CASES: List[PipelineCase] = [
    # prompt
    PipelineCase("prompt-int", dict(prompt=123), TypeError, "prompt"),
    PipelineCase("prompt-bytes", dict(prompt=b"shirt"), TypeError, "prompt"),
    PipelineCase("prompt-list-with-int", dict(prompt=["a", 1]), TypeError, "prompt"),
    PipelineCase("prompt-tuple-with-None", dict(prompt=("a", None)), TypeError, "prompt"),
    PipelineCase("prompt-set", dict(prompt={"a"}), TypeError, "prompt"),
    PipelineCase("prompt-65-prompts", dict(prompt=["a"] * 65), ValueError, "at most 64"),
    # num_inference_steps
    PipelineCase("steps-negative", dict(num_inference_steps=-5), ValueError, "num_inference_steps"),
    PipelineCase("steps-None", dict(num_inference_steps=None), ValueError, "num_inference_steps"),
    PipelineCase("steps-str", dict(num_inference_steps="10"), ValueError, "num_inference_steps"),
    PipelineCase("steps-1001", dict(num_inference_steps=1001), ValueError, "num_inference_steps"),
    PipelineCase("steps-1.5", dict(num_inference_steps=1.5), ValueError, "num_inference_steps"),
    PipelineCase("steps-np-float", dict(num_inference_steps=np.float64(3)), ValueError, "num_inference_steps"),
    # num_images_per_prompt
    PipelineCase("n-images-negative", dict(num_images_per_prompt=-1), ValueError, "num_images_per_prompt"),
    PipelineCase("n-images-1.5", dict(num_images_per_prompt=1.5), ValueError, "num_images_per_prompt"),
    PipelineCase("n-images-str", dict(num_images_per_prompt="2"), ValueError, "num_images_per_prompt"),
    PipelineCase("n-images-None", dict(num_images_per_prompt=None), ValueError, "num_images_per_prompt"),
    PipelineCase("n-images-True", dict(num_images_per_prompt=True), ValueError, "num_images_per_prompt"),
    PipelineCase("n-images-2x33", dict(prompt=["a", "b"], num_images_per_prompt=33), ValueError, "num_images_per_prompt=33"),
    # guidance_scale
    PipelineCase("guidance-str", dict(guidance_scale="2"), ValueError, "guidance_scale"),
    # guidance_min_p (None = guidance_scale's task default: 12 with a prompt and no image)
    PipelineCase("min-p-1", dict(prompt="x", guidance_min_p=1.0), ValueError, r"guidance_min_p must be a number in \[0, 1\)"),
    PipelineCase("min-p-nan", dict(prompt="x", guidance_min_p=NAN), ValueError, "guidance_min_p"),
    PipelineCase("min-p-None", dict(prompt="x", guidance_min_p=None), ValueError, "guidance_min_p"),
    PipelineCase("min-p-no-guidance", dict(prompt="x", guidance_scale=1.0, guidance_min_p=0.0), ValueError,
                 "guidance_min_p=0.0 filters the tokens of classifier-free guidance"),
    PipelineCase("min-p-unconditional", dict(prompt="", guidance_min_p=0.5), ValueError, "guidance_scale=1.0, so it would change nothing"),
    PipelineCase("guidance-negative", dict(guidance_scale=-1.0), ValueError, "guidance_scale"),
    # negative_guidance_scale (needs a negative prompt; a finite number in (0, 50])
    PipelineCase("neg-scale-no-negative", dict(prompt="x", negative_guidance_scale=4.0), ValueError,
                 "negative_guidance_scale=4.0 weighs a pass on the negative prompt"),
    PipelineCase("neg-scale-zero", dict(prompt="x", negative_prompt="y", negative_guidance_scale=0), ValueError, "negative_guidance_scale must be"),
    PipelineCase("neg-scale-nan", dict(prompt="x", negative_prompt="y", negative_guidance_scale=NAN), ValueError, "negative_guidance_scale must be"),
    PipelineCase("neg-scale-str", dict(prompt="x", negative_prompt="y", negative_guidance_scale="4"), ValueError, "negative_guidance_scale must be"),
    PipelineCase("neg-scale-no-guidance", dict(prompt="x", negative_prompt="y", guidance_scale=1.0, negative_guidance_scale=4.0), ValueError,
                 "negative_prompt is read by the classifier-free guidance pass"),
    PipelineCase("guidance-51", dict(guidance_scale=51), ValueError, "guidance_scale"),
    PipelineCase("guidance-list", dict(guidance_scale=[2.0]), ValueError, "guidance_scale"),
    PipelineCase("guidance-complex", dict(guidance_scale=2j), ValueError, "guidance_scale"),
    PipelineCase("guidance-zero", dict(guidance_scale=0), ValueError, "guidance_scale"),
    # temperature
    PipelineCase("temperature-101", dict(temperature=101), ValueError, "temperature"),
    PipelineCase("temperature-True", dict(temperature=True), ValueError, "temperature"),
    PipelineCase("temperature-list", dict(temperature=[1.0]), ValueError, "temperature"),
    PipelineCase("temperature-minus-zero", dict(temperature=-0.0), ValueError, "temperature"),
    PipelineCase("temperature-underflow", dict(temperature=1e-400), ValueError, "temperature"),
    # refine_ratio
    PipelineCase("refine-negative", dict(refine_ratio=-0.1), ValueError, "refine_ratio"),
    PipelineCase("refine-nan", dict(refine_ratio=NAN), ValueError, "refine_ratio"),
    PipelineCase("refine-str", dict(refine_ratio="0.5"), ValueError, "refine_ratio"),
    PipelineCase("refine-None", dict(refine_ratio=None), ValueError, "refine_ratio"),
    PipelineCase("refine-True", dict(refine_ratio=True), ValueError, "refine_ratio"),
    PipelineCase("refine-inf", dict(refine_ratio=INF), ValueError, "refine_ratio"),
    # generator
    PipelineCase("generator-str", dict(generator="seed"), TypeError, "generator"),
    PipelineCase("generator-empty-list", dict(generator=[]), TypeError, "generator"),
    PipelineCase("generator-class", dict(generator=torch.Generator), TypeError, "generator"),
    # output_type
    PipelineCase("output-type-None", dict(output_type=None), ValueError, "output_type"),
    PipelineCase("output-type-PIL", dict(output_type="PIL"), ValueError, "output_type"),
    PipelineCase("output-type-int", dict(output_type=1), ValueError, "output_type"),
    PipelineCase("output-type-latent", dict(output_type="latent"), ValueError, "output_type"),
    # height / width
    PipelineCase("height-negative", dict(height=-64), ValueError, "height=-64"),
    PipelineCase("width-np-float", dict(width=np.float64(64)), TypeError, "width"),
    PipelineCase("width-str", dict(width="64"), TypeError, "width"),
    PipelineCase("width-huge", dict(height=64, width=10**9), ValueError, r"cannot make a 1000000000x64"),
    PipelineCase("width-zero", dict(width=0), ValueError, "width=0"),
    # image / mask_image / style_image: types
    PipelineCase("image-int", dict(image=123, mask_image=MASK), TypeError, "image must be"),
    PipelineCase("image-path-str", dict(image="shirt.png", mask_image=MASK), TypeError, "image must be"),
    PipelineCase("image-list-with-None", dict(image=[IMG, None], mask_image=MASK), TypeError, r"image\[1\]"),
    PipelineCase("mask-path-str", dict(image=IMG, mask_image="mask.png"), TypeError, "mask_image must be"),
    PipelineCase("mask-int", dict(image=IMG, mask_image=123), TypeError, "mask_image must be"),
    PipelineCase("style-int", dict(image=IMG, mask_image=MASK, style_image=123), TypeError, "style_image must be"),
    PipelineCase("image-empty-list", dict(image=[], mask_image=MASK), ValueError, "image is an empty list"),
    # image contents (outpainting, so that no mask size check comes first)
    PipelineCase("image-float-0-255", dict(image=np.full((64, 48, 3), 200.0), image_box=(0, 0, 32, 32)), ValueError,
                 r"image: float arrays must hold values in \[0, 1\]"),
    PipelineCase("image-int16-negative", dict(image=np.full((64, 48, 3), -5, np.int16), image_box=(0, 0, 32, 32)), ValueError,
                 r"image: integer arrays must hold values in \[0, 255\]"),
    PipelineCase("image-uint16-big", dict(image=np.full((64, 48, 3), 4000, np.uint16), image_box=(0, 0, 32, 32)), ValueError,
                 r"image: integer arrays"),
    PipelineCase("image-nan-array", dict(image=np.full((64, 48, 3), NAN), image_box=(0, 0, 32, 32)), ValueError, "image: the array holds NaN"),
    PipelineCase("image-2-channels", dict(image=np.zeros((64, 48, 2), np.uint8), image_box=(0, 0, 32, 32)), ValueError, "image arrays must have shape"),
    PipelineCase("image-5d-array", dict(image=np.zeros((1, 1, 8, 8, 3), np.uint8), image_box=(0, 0, 32, 32)), ValueError, "image arrays must have shape"),
    PipelineCase("image-empty-array", dict(image=np.zeros((0, 8, 3), np.uint8), image_box=(0, 0, 32, 32)), ValueError, "image has no pixels"),
    PipelineCase("image-complex-array", dict(image=np.zeros((8, 8, 3), np.complex64), image_box=(0, 0, 32, 32)), TypeError, "image: arrays must be"),
    PipelineCase("image-uint8-tensor", dict(image=torch.full((3, 8, 8), 200, dtype=torch.uint8), image_box=(0, 0, 32, 32)), TypeError,
                 "image tensors must be float"),
    PipelineCase("image-tensor-0-255", dict(image=torch.full((3, 8, 8), 200.0), image_box=(0, 0, 32, 32)), ValueError,
                 r"image tensors must hold values in \[-1, 1\]"),
    PipelineCase("image-nan-tensor", dict(image=torch.full((3, 8, 8), NAN), image_box=(0, 0, 32, 32)), ValueError, "image tensor holds NaN"),
    PipelineCase("image-empty-tensor", dict(image=torch.zeros(3, 0, 8), image_box=(0, 0, 32, 32)), ValueError, "image tensor has no pixels"),
    PipelineCase("image-2d-tensor", dict(image=torch.zeros(8, 8), image_box=(0, 0, 32, 32)), ValueError, "image tensors must have shape"),
    PipelineCase("image-1-channel-tensor", dict(image=torch.zeros(1, 1, 8, 8), image_box=(0, 0, 32, 32)), ValueError, "image tensors must have shape"),
    PipelineCase("image-pil-no-pixels", dict(image=PIL.Image.new("RGB", (0, 10)), image_box=(0, 0, 32, 32)), ValueError, "image has no pixels"),
    PipelineCase("image-pil-HSV", dict(image=PIL.Image.new("HSV", (8, 8)), image_box=(0, 0, 32, 32)), ValueError, "image mode 'HSV'"),
    PipelineCase("image-pil-La", dict(image=PIL.Image.new("La", (8, 8)), image_box=(0, 0, 32, 32)), ValueError, "image mode 'La'"),
    PipelineCase("style-pil-F", dict(image=IMG, mask_image=MASK, style_image=PIL.Image.new("F", (8, 8))), ValueError, "style_image mode 'F'"),
    PipelineCase("style-float-0-255", dict(image=IMG, mask_image=MASK, style_image=np.full((8, 8, 3), 9.0)), ValueError,
                 "style_image: float arrays"),
    # mask contents
    PipelineCase("mask-nan-array", dict(image=IMG, mask_image=np.full((64, 48), NAN)), ValueError, "mask_image holds NaN"),
    PipelineCase("mask-negative-array", dict(image=IMG, mask_image=np.full((64, 48), -1.0)), ValueError, "mask_image values must lie"),
    PipelineCase("mask-300-array", dict(image=IMG, mask_image=np.full((64, 48), 300)), ValueError, "mask_image values must lie"),
    PipelineCase("mask-batch-of-2-array", dict(image=IMG, mask_image=np.zeros((2, 64, 48))), ValueError, "mask_image"),
    PipelineCase("mask-object-array", dict(image=IMG, mask_image=np.full((64, 48), None, dtype=object)), TypeError, "mask_image: arrays must be"),
    PipelineCase("mask-nan-tensor", dict(image=IMG, mask_image=torch.full((64, 48), NAN)), ValueError, "mask_image holds NaN"),
    PipelineCase("mask-5d-tensor", dict(image=IMG, mask_image=torch.ones(1, 2, 2, 64, 48)), ValueError, "mask_image must be one mask"),
    PipelineCase("mask-pil-La", dict(image=IMG, mask_image=PIL.Image.new("La", (48, 64))), ValueError, "mask_image mode 'La'"),
    PipelineCase("mask-pil-no-pixels", dict(image=PIL.Image.new("RGB", (0, 0)), mask_image=PIL.Image.new("L", (0, 0))), ValueError,
                 "has no pixels"),
    PipelineCase("mask-all-black-array", dict(image=IMG, mask_image=np.zeros((64, 48), np.uint8)), ValueError, "mask_image selects no pixel"),
    # boxes
    PipelineCase("image-box-inf", dict(image=IMG, image_box=(0, 0, INF, 10)), ValueError, "image_box must be 4 finite numbers"),
    PipelineCase("image-box-nan", dict(image=IMG, image_box=(0, 0, NAN, 10)), ValueError, "image_box must be 4 finite numbers"),
    PipelineCase("image-box-str", dict(image=IMG, image_box="0 0 10 10"), ValueError, "image_box must be 4"),
    PipelineCase("image-box-3-numbers", dict(image=IMG, image_box=(0, 0, 10)), ValueError, "image_box must be 4"),
    PipelineCase("image-box-5-numbers", dict(image=IMG, image_box=(0, 0, 10, 10, 10)), ValueError, "image_box must be 4"),
    PipelineCase("image-box-int", dict(image=IMG, image_box=5), ValueError, "image_box must be 4"),
    PipelineCase("image-box-reversed", dict(image=IMG, image_box=(10, 0, 5, 10)), ValueError, r"image_box \(10, 0, 5, 10\) is outside"),
    PipelineCase("image-box-negative", dict(image=IMG, image_box=(-1, 0, 10, 10)), ValueError, "image_box .* is outside"),
    PipelineCase("image-box-without-image", dict(image_box=(0, 0, 32, 32)), ValueError, "image_box .*needs an image"),
    PipelineCase("image-box-and-mask", dict(image=IMG, mask_image=MASK, image_box=(0, 0, 32, 32)), ValueError, "either image_box"),
    # reference_images
    PipelineCase("refs-a-bare-pair", dict(reference_images=(IMG, (0, 0, 16, 16))), ValueError, r"reference_images\[0\] must be a pair"),
    PipelineCase("refs-1-tuple", dict(reference_images=[(IMG,)]), ValueError, r"reference_images\[0\] must be a pair"),
    PipelineCase("refs-3-tuple", dict(reference_images=[(IMG, (0, 0, 16, 16), "x")]), ValueError, r"reference_images\[0\] must be a pair"),
    PipelineCase("refs-path-str", dict(reference_images=[("patch.png", (0, 0, 16, 16))]), TypeError, r"reference_images\[0\]\[0\]"),
    PipelineCase("refs-box-inf", dict(reference_images=[(IMG, (0, 0, INF, 16))]), ValueError, r"reference_images\[0\] box must be 4 finite"),
    PipelineCase("refs-second-box-outside", dict(reference_images=[(IMG, (0, 0, 16, 16)), (IMG, (0, 0, 100, 16))]), ValueError,
                 r"reference_images\[1\] box .* is outside"),
    PipelineCase("refs-str", dict(reference_images="abc"), ValueError, "reference_images must be a non-empty list"),
    PipelineCase("refs-dict", dict(reference_images={}), ValueError, "reference_images must be a non-empty list"),
    PipelineCase("refs-float-array", dict(reference_images=[(np.full((8, 8, 3), 50.0), (0, 0, 16, 16))]), ValueError,
                 r"reference_images\[0\]: float arrays"),
    # tasks that miss a part
    PipelineCase("mask-without-image", dict(mask_image=MASK), ValueError, "mask_image needs an image"),
    PipelineCase("style-without-mask", dict(image=IMG, style_image=IMG, reference_images=None), ValueError, "style mixing needs"),
    PipelineCase("style-alone", dict(style_image=IMG), ValueError, "style mixing needs"),
    # callbacks
    PipelineCase("callback-str", dict(callback_on_step_end="print"), TypeError, "callback_on_step_end must be callable"),
    PipelineCase("callback-inputs-latents", dict(callback_on_step_end_tensor_inputs=["latents"]), ValueError,
                 "callback_on_step_end_tensor_inputs"),
    PipelineCase("callback-returns-list", dict(callback_on_step_end=_bad_tokens_callback("list"), num_inference_steps=1), TypeError,
                 "callback_on_step_end must return a dict", early=False),
    PipelineCase("callback-returns-bad-tokens", dict(callback_on_step_end=_bad_tokens_callback("shape"), num_inference_steps=1),
                 ValueError, "callback_on_step_end returned tokens of shape", early=False),
    # lists of different lengths
    PipelineCase("images-vs-prompts", dict(prompt=["a", "b", "c"], image=[IMG, IMG], mask_image=MASK), ValueError,
                 "image has 2 entries but there are 3 prompts"),
    PipelineCase("masks-vs-prompts", dict(prompt=["a", "b"], image=IMG, mask_image=[MASK] * 3), ValueError, "mask_image has 3 entries"),
    PipelineCase("styles-vs-prompts", dict(prompt=["a", "b"], image=IMG, mask_image=MASK, style_image=[IMG] * 3), ValueError,
                 "style_image has 3 entries"),
    # arguments that would change nothing in this combination (no silent no-ops, issue 16)
    PipelineCase("guidance-without-prompt", dict(prompt=None, guidance_scale=3.0), ValueError,
                 r"guidance_scale=3 steers .* neither \(no prompt text, no reference_images\)"),
    PipelineCase("guidance-blank-prompts", dict(prompt=["", "  "], guidance_scale=2.0), ValueError, "guidance_scale=2 steers"),
    PipelineCase("guidance-mixing-without-prompt", dict(prompt=None, image=IMG, style_image=IMG, mask_image=MASK, guidance_scale=2.0),
                 ValueError, "guidance_scale=2 steers"),
    PipelineCase("refine-without-mixing", dict(refine_ratio=0.5), ValueError, r"refine_ratio=0.5 only acts in style mixing"),
    PipelineCase("refine-with-inpainting", dict(image=IMG, mask_image=MASK, refine_ratio=0.0), ValueError,
                 "refine_ratio=0.0 only acts in style mixing"),
    PipelineCase("blend-off-without-image", dict(blend_pixels=False, output_type="np"), ValueError, "blend_pixels=False .* no image"),
    PipelineCase("blend-off-tokens", dict(image=IMG, mask_image=MASK, blend_pixels=False), ValueError,
                 "blend_pixels=False .* output_type='tokens'"),
    PipelineCase("blend-str", dict(image=IMG, mask_image=MASK, blend_pixels="no"), TypeError, "blend_pixels must be True or False"),
    PipelineCase("image-box-whole-output", dict(image=IMG, image_box=(0, 0, 64, 64)), ValueError,
                 r"image_box \(0, 0, 64, 64\) covers the whole 64x64"),
    PipelineCase("image-box-whole-after-rounding", dict(image=IMG, image_box=(1, 2, 63, 62)), ValueError,
                 "covers the whole 64x64 .* once widened to whole 4-px token cells"),
    PipelineCase("image-box-whole-crop", dict(image=IMG, image_box=(0, 0, 48, 64), width=48, height=64), ValueError,
                 "covers the whole 48x64"),
    PipelineCase("image-with-a-patch-without-box", dict(image=IMG, reference_images=[IMG]), ValueError,
                 r"reference_images\[0\] must be a pair \(image, box\)"),  # no mask and no box: nothing says what to edit
    PipelineCase("callback-inputs-without-callback", dict(callback_on_step_end_tensor_inputs=["tokens"]), ValueError,
                 "no callback_on_step_end is given"),
]


@dataclass
class CliCase:
    id: str
    argv: List[str]  # "{d}" is the case's folder (input files, outputs); "{model}" a saved tiny pipeline
    match: str
    loads: bool = False  # the error needs the model (raised after loading it); otherwise loading is forbidden
    subprocess: bool = False  # also run as a real process


def _g(*extra):  # a generate command line
    return ["generate", "--prompt", "shirt", "--out", "{d}/out.png", *extra]


CLI_CASES: List[CliCase] = [
    CliCase("steps-1001", _g("--steps", "1001"), "--steps 1001 is too many", subprocess=True),
    CliCase("steps-negative", _g("--steps", "-3"), "--steps"),
    CliCase("steps-float", _g("--steps", "1.5"), "--steps"),
    CliCase("guidance-nan", _g("--guidance-scale", "nan"), "--guidance-scale", subprocess=True),
    CliCase("guidance-inf", _g("--guidance-scale", "inf"), "--guidance-scale"),
    CliCase("guidance-0.5", _g("--guidance-scale", "0.5"), "--guidance-scale"),
    CliCase("guidance-51", _g("--guidance-scale", "51"), "--guidance-scale"),
    CliCase("guidance-word", _g("--guidance-scale", "abc"), "--guidance-scale"),
    CliCase("neg-scale-no-negative", _g("--negative-guidance-scale", "4"), "--negative-guidance-scale weighs a pass on --negative-prompt"),
    CliCase("temperature-zero", _g("--temperature", "0"), "--temperature"),
    CliCase("temperature-negative", _g("--temperature", "-1"), "--temperature"),
    CliCase("temperature-nan", _g("--temperature", "nan"), "--temperature", subprocess=True),
    CliCase("temperature-1000", _g("--temperature", "1000"), "--temperature"),
    CliCase("temperature-word", _g("--temperature", "x"), "--temperature"),
    CliCase("seed-2^64", _g("--seed", str(2**64)), "--seed", subprocess=True),
    CliCase("seed-below-int64", _g("--seed", str(-(2**63) - 1)), "--seed"),
    CliCase("seed-float", _g("--seed", "1.5"), "--seed"),
    CliCase("num-images-negative", _g("--num-images", "-1"), "--num-images"),
    CliCase("num-images-65", _g("--num-images", "65"), "--num-images"),
    CliCase("height-negative", _g("--height", "-5"), "--height"),
    CliCase("height-zero", _g("--height", "0"), "--height"),
    CliCase("width-word", _g("--width", "abc"), "--width"),
    CliCase("height-4097", _g("--height", "4097"), "--height 4097 is too large"),
    CliCase("size-zero", _g("--size", "0"), "--size"),
    CliCase("size-negative", _g("--size", "-1"), "--size"),
    CliCase("dtype-float16", _g("--dtype", "float16"), "--dtype"),
    CliCase("prompt-without-value", ["generate", "--out", "{d}/out.png", "--prompt"], "--prompt"),
    CliCase("out-empty", ["generate", "--out", ""], "--out"),
    CliCase("out-a-folder", ["generate", "--out", "{d}/adir"], "--out", subprocess=True),
    CliCase("out-trailing-slash", ["generate", "--out", "{d}/newdir/"], "--out"),
    CliCase("out-jpg", ["generate", "--out", "{d}/out.jpg"], "--out"),
    CliCase("out-existing", ["generate", "--out", "{d}/existing.png"], "--overwrite", subprocess=True),
    CliCase("out-second-image-existing", ["generate", "--num-images", "2", "--out", "{d}/pair.png"], "pair-1.png already exist"),
    CliCase("model-home-missing", _g("--model", "~/no-such-m6-model"), "--model"),
    CliCase("model-abs-missing", _g("--model", "/no/such/m6/model"), "--model"),
    CliCase("inpaint-image-folder", ["inpaint", "--image", "{d}/adir", "--mask", "{d}/mask.png", "--out", "{d}/out.png"],
            "--image .* is a folder"),
    CliCase("inpaint-image-not-an-image", ["inpaint", "--image", "{d}/notimage.png", "--mask", "{d}/mask.png", "--out", "{d}/out.png"],
            "cannot read --image", subprocess=True),
    CliCase("inpaint-image-empty-file", ["inpaint", "--image", "{d}/empty.png", "--mask", "{d}/mask.png", "--out", "{d}/out.png"],
            "cannot read --image"),
    CliCase("inpaint-mask-not-an-image", ["inpaint", "--image", "{d}/a.png", "--mask", "{d}/notimage.png", "--out", "{d}/out.png"],
            "cannot read --mask"),
    CliCase("inpaint-mask-other-size", ["inpaint", "--image", "{d}/a.png", "--mask", "{d}/small_mask.png", "--out", "{d}/out.png"],
            "--mask is 10x10 but --image is 48x64"),
    CliCase("inpaint-mask-all-black", ["inpaint", "--image", "{d}/a.png", "--mask", "{d}/black.png", "--out", "{d}/out.png"],
            "--mask selects no pixel", subprocess=True),
    CliCase("inpaint-mask-folder", ["inpaint", "--image", "{d}/a.png", "--mask", "{d}/adir", "--out", "{d}/out.png"],
            "--mask .* is a folder"),
    CliCase("inpaint-no-mask", ["inpaint", "--image", "{d}/a.png", "--out", "{d}/out.png"], "--mask"),
    CliCase("inpaint-no-image", ["inpaint", "--mask", "{d}/mask.png", "--out", "{d}/out.png"], "--image"),
    CliCase("outpaint-box-reversed", ["outpaint", "--image", "{d}/a.png", "--box", "10", "0", "5", "10", "--out", "{d}/out.png"], "--box"),
    CliCase("outpaint-box-negative", ["outpaint", "--image", "{d}/a.png", "--box", "-1", "0", "10", "10", "--out", "{d}/out.png"], "--box"),
    CliCase("outpaint-box-words", ["outpaint", "--image", "{d}/a.png", "--box", "a", "b", "c", "d", "--out", "{d}/out.png"], "--box"),
    CliCase("outpaint-box-empty", ["outpaint", "--image", "{d}/a.png", "--box", "0", "0", "0", "0", "--out", "{d}/out.png"], "--box"),
    CliCase("edit-two-references-one-box", ["edit", "--reference", "{d}/a.png", "--reference", "{d}/a.png", "--box", "0", "0", "8", "8",
                                            "--out", "{d}/out.png"], "one --box per --reference"),
    CliCase("edit-mask-without-image", ["edit", "--reference", "{d}/a.png", "--box", "0", "0", "8", "8", "--mask", "{d}/mask.png",
                                        "--out", "{d}/out.png"], "--mask needs --image"),
    CliCase("edit-reference-missing", ["edit", "--reference", "{d}/missing.png", "--box", "0", "0", "8", "8", "--out", "{d}/out.png"],
            "--reference .* does not exist"),
    CliCase("edit-reference-folder", ["edit", "--reference", "{d}/adir", "--box", "0", "0", "8", "8", "--out", "{d}/out.png"],
            "--reference .* is a folder"),
    CliCase("edit-mask-other-size", ["edit", "--reference", "{d}/a.png", "--box", "0", "0", "8", "8", "--image", "{d}/a.png",
                                     "--mask", "{d}/small_mask.png", "--out", "{d}/out.png"], "--mask is 10x10"),
    CliCase("edit-box-empty", ["edit", "--reference", "{d}/a.png", "--box", "5", "5", "5", "5", "--out", "{d}/out.png"], "--box 5 5 5 5"),
    CliCase("mix-style-missing", ["mix", "--image", "{d}/a.png", "--style-image", "{d}/missing.png", "--mask", "{d}/mask.png",
                                  "--out", "{d}/out.png"], "--style-image .* does not exist"),
    CliCase("mix-style-not-an-image", ["mix", "--image", "{d}/a.png", "--style-image", "{d}/notimage.png", "--mask", "{d}/mask.png",
                                       "--out", "{d}/out.png"], "cannot read --style-image"),
    CliCase("mix-mask-all-black", ["mix", "--image", "{d}/a.png", "--style-image", "{d}/a.png", "--mask", "{d}/black.png",
                                   "--out", "{d}/out.png"], "--mask selects no pixel"),
    CliCase("mix-no-style", ["mix", "--image", "{d}/a.png", "--mask", "{d}/mask.png", "--out", "{d}/out.png"], "--style-image"),
    # commands that parse their own arguments: the same one-line usage errors
    CliCase("studio-port-word", ["studio", "--port", "abc"], "--port", subprocess=True),
    CliCase("evaluate-split-nope", ["evaluate", "--split", "nope"], "--split"),
    CliCase("train-tokenizer-no-data", ["train-tokenizer"], "--data"),
    CliCase("train-transformer-bogus-option", ["train-transformer", "--bogus"], "--bogus"),
    CliCase("train-tokenizer-bogus-option", ["train-tokenizer", "--data", "{d}/x", "--output_dir", "{d}/o", "--bogus"], "--bogus"),
    CliCase("finetune-bogus-option", ["finetune", "--data", "{d}/x", "--output_dir", "{d}/ft", "--bogus"], "--bogus"),
    CliCase("finetune-no-data", ["finetune", "--output_dir", "{d}/ft"], "--data"),
    CliCase("export-onnx-model-missing", ["export", "onnx", "--model", "{d}/missing", "--out", "{d}/bundle"], "--model"),
    # these need the model (a saved tiny pipeline, 64x64 outputs): refused right after loading it
    CliCase("height-the-model-cannot-make", _g("--model", "{model}", "--height", "100"), "cannot make a height=100", loads=True),
    CliCase("outpaint-box-outside-the-output", ["outpaint", "--model", "{model}", "--image", "{d}/a.png", "--box", "0", "0", "100", "100",
                                                "--out", "{d}/out.png"], r"image_box \(0, 0, 100, 100\) is outside the 64x64", loads=True),
    CliCase("edit-box-outside-the-output", ["edit", "--model", "{model}", "--reference", "{d}/a.png", "--box", "0", "0", "70", "10",
                                            "--out", "{d}/out.png"], r"reference_images\[0\] box .* is outside", loads=True),
    CliCase("edit-patches-too-large", ["edit", "--model", "{model}", "--reference", "{d}/a.png", "--box", "0", "0", "64", "64",
                                       "--reference", "{d}/a.png", "--box", "0", "0", "64", "64", "--out", "{d}/out.png"],
            "token cells", loads=True),
    CliCase("inpaint-image-mode-F", ["inpaint", "--model", "{model}", "--image", "{d}/float.tiff", "--mask", "{d}/mask.png",
                                     "--out", "{d}/out.png"], "image mode 'F'", loads=True),
    CliCase("model-a-file", _g("--model", "{d}/notimage.png"), "cannot load --model", loads=True),
    CliCase("model-an-empty-folder", _g("--model", "{d}/adir"), "cannot load --model", loads=True),
    CliCase("model-truncated-weights", _g("--model", "{d}/truncated_model"), "cannot load --model .*SafetensorError", loads=True),
    CliCase("model-broken-config", _g("--model", "{d}/broken_config_model"), "cannot load --model .*config", loads=True),
]


@dataclass
class RuntimeCase:
    id: str
    call: Callable  # call(rt) with the tiny bundle's runtime (32x32 outputs, 8x8 grid, at most 16 condition cells)
    error: type
    match: str


def _rt_init(**kw):
    def call(rt):
        import m6_fashion_runtime as mrt

        kw.setdefault("bundle", rt.bundle.root)
        return mrt.M6FashionRuntime(**kw)
    return call


def _rt(**kw):
    kw.setdefault("output_type", "tokens")
    return lambda rt: rt(**kw)


RIMG, RMASK = _img(32, 32), _mask(32, 32)
RUNTIME_API_CASES: List[RuntimeCase] = [
    RuntimeCase("init-bundle-int", _rt_init(bundle=123), TypeError, "bundle must be"),
    RuntimeCase("init-bundle-None", _rt_init(bundle=None), TypeError, "bundle must be"),
    RuntimeCase("init-provider-gpu", _rt_init(provider="gpu"), ValueError, "provider 'gpu'"),
    RuntimeCase("init-threads-zero", _rt_init(num_threads=0), ValueError, "num_threads"),
    RuntimeCase("init-threads-str", _rt_init(num_threads="4"), ValueError, "num_threads"),
    RuntimeCase("init-threads-negative", _rt_init(num_threads=-1), ValueError, "num_threads"),
    RuntimeCase("init-threads-True", _rt_init(num_threads=True), ValueError, "num_threads"),
    RuntimeCase("prompt-int", _rt(prompt=123), TypeError, "prompt"),
    RuntimeCase("prompt-empty-list", _rt(prompt=[]), ValueError, "prompt"),
    RuntimeCase("prompt-list-with-int", _rt(prompt=["a", 1]), ValueError, "prompt"),
    RuntimeCase("steps-10^9", _rt(num_inference_steps=10**9), ValueError, "num_inference_steps"),
    RuntimeCase("steps-float", _rt(num_inference_steps=2.0), ValueError, "num_inference_steps"),
    RuntimeCase("steps-True", _rt(num_inference_steps=True), ValueError, "num_inference_steps"),
    RuntimeCase("steps-negative", _rt(num_inference_steps=-1), ValueError, "num_inference_steps"),
    RuntimeCase("n-images-True", _rt(num_images_per_prompt=True), ValueError, "num_images_per_prompt"),
    RuntimeCase("n-images-10^6", _rt(num_images_per_prompt=10**6), ValueError, "num_images_per_prompt"),
    RuntimeCase("n-images-zero", _rt(num_images_per_prompt=0), ValueError, "num_images_per_prompt"),
    RuntimeCase("n-images-str", _rt(num_images_per_prompt="2"), ValueError, "num_images_per_prompt"),
    RuntimeCase("guidance-nan", _rt(guidance_scale=NAN), ValueError, "guidance_scale"),
    RuntimeCase("guidance-inf", _rt(guidance_scale=INF), ValueError, "guidance_scale"),
    RuntimeCase("guidance-str", _rt(guidance_scale="2"), ValueError, "guidance_scale"),
    RuntimeCase("min-p-1", _rt(guidance_min_p=1.0), ValueError, r"guidance_min_p must be a number in \[0, 1\)"),
    RuntimeCase("min-p-no-guidance", _rt(guidance_scale=1.0, guidance_min_p=0.0), ValueError, "guidance_min_p=0.0 filters"),
    RuntimeCase("guidance-51", _rt(guidance_scale=51), ValueError, "guidance_scale"),
    RuntimeCase("neg-scale-no-negative", _rt(negative_guidance_scale=4.0), ValueError, "negative_guidance_scale=4.0 weighs a pass"),
    RuntimeCase("neg-scale-inf", _rt(prompt="x", negative_prompt="y", negative_guidance_scale=INF), ValueError, "negative_guidance_scale must be"),
    RuntimeCase("temperature-zero", _rt(temperature=0), ValueError, "temperature"),
    RuntimeCase("temperature-nan", _rt(temperature=NAN), ValueError, "temperature"),
    RuntimeCase("temperature-inf", _rt(temperature=INF), ValueError, "temperature"),
    RuntimeCase("temperature-str", _rt(temperature="1"), ValueError, "temperature"),
    RuntimeCase("temperature-True", _rt(temperature=True), ValueError, "temperature"),
    RuntimeCase("seed-negative", _rt(seed=-1), ValueError, "seed"),
    RuntimeCase("seed-float", _rt(seed=1.5), ValueError, "seed"),
    RuntimeCase("seed-str", _rt(seed="0"), ValueError, "seed"),
    RuntimeCase("output-type-pt", _rt(output_type="pt"), ValueError, "output_type"),
    RuntimeCase("output-type-None", _rt(output_type=None), ValueError, "output_type"),
    RuntimeCase("refine-str", _rt(refine_ratio="x"), ValueError, "refine_ratio"),
    RuntimeCase("refine-None", _rt(refine_ratio=None), ValueError, "refine_ratio"),
    RuntimeCase("refine-nan", _rt(refine_ratio=NAN), ValueError, "refine_ratio"),
    RuntimeCase("refine-negative", _rt(refine_ratio=-1), ValueError, "refine_ratio"),
    RuntimeCase("image-int", _rt(image=123, mask_image=RMASK), TypeError, "image must be"),
    RuntimeCase("mask-path-str", _rt(image=RIMG, mask_image="m.png"), TypeError, "mask_image must be"),
    RuntimeCase("style-int", _rt(image=RIMG, mask_image=RMASK, style_image=123), TypeError, "style_image must be"),
    RuntimeCase("image-empty-list", _rt(image=[], mask_image=RMASK), ValueError, "image is an empty list"),
    RuntimeCase("image-float-0-255", _rt(image=np.full((8, 8, 3), 99.0), image_box=(0, 0, 16, 16)), ValueError, "image: float arrays"),
    RuntimeCase("image-empty-array", _rt(image=np.zeros((0, 8, 3), np.uint8), image_box=(0, 0, 16, 16)), ValueError, "image has no pixels"),
    RuntimeCase("image-pil-no-pixels", _rt(image=PIL.Image.new("RGB", (0, 5)), image_box=(0, 0, 16, 16)), ValueError, "image has no pixels"),
    RuntimeCase("image-pil-HSV", _rt(image=PIL.Image.new("HSV", (8, 8)), image_box=(0, 0, 16, 16)), ValueError, "image mode 'HSV'"),
    RuntimeCase("style-float-0-255", _rt(image=RIMG, mask_image=RMASK, style_image=np.full((8, 8, 3), 9.0)), ValueError,
                "style_image: float arrays"),
    RuntimeCase("mask-nan-array", _rt(image=RIMG, mask_image=np.full((32, 32), NAN)), ValueError, "mask_image holds NaN"),
    RuntimeCase("mask-300-array", _rt(image=RIMG, mask_image=np.full((32, 32), 300)), ValueError, "mask_image values must lie"),
    RuntimeCase("mask-pil-La", _rt(image=RIMG, mask_image=PIL.Image.new("La", (32, 32))), ValueError, "mask_image mode 'La'"),
    RuntimeCase("image-box-inf", _rt(image=RIMG, image_box=(0, 0, INF, 10)), ValueError, "image_box must be 4 finite numbers"),
    RuntimeCase("image-box-reversed", _rt(image=RIMG, image_box=(20, 0, 10, 10)), ValueError, r"image_box \(20, 0, 10, 10\) is outside"),
    RuntimeCase("image-box-without-image", _rt(image_box=(0, 0, 16, 16)), ValueError, "image_box .*needs image"),
    RuntimeCase("refs-path-str", _rt(reference_images=[("p.png", (0, 0, 8, 8))]), TypeError, r"reference_images\[0\]\[0\]"),
    RuntimeCase("refs-box-nan", _rt(reference_images=[(RIMG, (0, 0, NAN, 8))]), ValueError, r"reference_images\[0\] box must be 4 finite"),
    RuntimeCase("refs-second-box-outside", _rt(reference_images=[(RIMG, (0, 0, 8, 8)), (RIMG, (0, 0, 8, 40))]), ValueError,
                r"reference_images\[1\] box .* is outside"),
    RuntimeCase("refs-too-many-cells", _rt(reference_images=[(RIMG, (0, 0, 32, 32))]), ValueError, "64 token cells.*at most 16"),
    RuntimeCase("width-float", _rt(width=32.0), TypeError, "width must be an integer"),
    RuntimeCase("height-33", _rt(height=33), ValueError, "cannot make a height=33"),
    RuntimeCase("images-vs-prompts", _rt(prompt=["a", "b", "c"], image=[RIMG, RIMG], mask_image=RMASK), ValueError,
                "image has 2 entries but there are 3 prompts"),
    # arguments that would change nothing in this combination (as the pipeline refuses them)
    RuntimeCase("guidance-without-prompt", _rt(guidance_scale=2.0), ValueError, r"guidance_scale=2 steers .* neither"),
    RuntimeCase("guidance-mixing-without-prompt", _rt(image=RIMG, style_image=RIMG, mask_image=RMASK, guidance_scale=3.0), ValueError,
                "guidance_scale=3 steers"),
    RuntimeCase("refine-without-mixing", _rt(prompt="x", refine_ratio=0.5), ValueError, "refine_ratio=0.5 only acts in style mixing"),
    RuntimeCase("blend-off-without-image", _rt(prompt="x", blend_pixels=False, output_type="np"), ValueError,
                "blend_pixels=False .* no image"),
    RuntimeCase("blend-off-tokens", _rt(image=RIMG, mask_image=RMASK, blend_pixels=False), ValueError,
                "blend_pixels=False .* output_type='tokens'"),
    RuntimeCase("image-box-whole-output", _rt(image=RIMG, image_box=(0, 0, 32, 32)), ValueError, "covers the whole 32x32"),
    RuntimeCase("image-with-a-patch-without-box", _rt(image=RIMG, reference_images=[RIMG]), ValueError, r"reference_images\[0\] must be a pair"),
]


@dataclass
class BundleCase:
    id: str
    edit: Callable[[dict, Path], None]  # edits bundle.json (a dict) and the copied folder
    match: str
    load: str = "bundle"  # "bundle": load_bundle raises; "runtime": M6FashionRuntime(...)("x") raises


def _set(path: str, value):
    def edit(cfg, root):
        *parents, last = path.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
    return edit


_DELETE = object()


def _whole(value):
    def edit(cfg, root):
        cfg.clear()
        cfg["__replace__"] = value
    return edit


def _corrupt(name: str, content: bytes):
    def edit(cfg, root):
        target = root / name
        target.unlink()
        target.write_bytes(content)
    return edit


BUNDLE_CASES: List[BundleCase] = [
    BundleCase("json-a-list", _whole([1, 2]), "must hold a JSON object"),
    BundleCase("format-other", _set("format", "other"), "format is 'other'"),
    BundleCase("format-version-True", _set("format_version", True), "format version True"),
    BundleCase("no-geometry", _set("geometry", _DELETE), "'geometry'"),
    BundleCase("geometry-lacks-grid-size", _set("geometry.grid_size", _DELETE), r"geometry lacks \['grid_size'\]"),
    BundleCase("geometry-grid-size-str", _set("geometry.grid_size", "8"), "geometry.grid_size must be an integer"),
    BundleCase("geometry-sample-size-33", _set("geometry.sample_size", 33), "sample_size 33 is not a multiple of grid_size"),
    BundleCase("geometry-num-image-tokens", _set("geometry.num_image_tokens", 63), "num_image_tokens 63"),
    BundleCase("special-lacks-mask", _set("special_token_ids.mask", _DELETE), r"special_token_ids lacks \['mask'\]"),
    BundleCase("scheduler-mask-token", _set("scheduler.mask_token_id", 99), "scheduler.mask_token_id 99"),
    BundleCase("files-lacks-tokenizer", _set("files.tokenizer", _DELETE), r"files lacks entries for \['tokenizer'\]"),
    BundleCase("file-outside-the-folder", _set("files.transformer", "../transformer.onnx"), "'transformer' .* must be a name inside"),
    BundleCase("file-absolute-path", _set("files.transformer", "/etc/hostname"), "'transformer' .* must be a name inside"),
    BundleCase("scheduler-temperature-zero", _set("scheduler.temperature", 0), "scheduler section: temperature must be"),
    BundleCase("scheduler-alpha-below-beta", _set("scheduler.alpha", 0.1), "scheduler section: need 0 <= beta <= alpha"),
    BundleCase("transformer-not-onnx", _corrupt("transformer_target.onnx", b"not an onnx graph"),
               "transformer_target.onnx .* cannot be loaded by onnxruntime", load="runtime"),
    BundleCase("prefix-graph-not-onnx", _corrupt("transformer_prefix.onnx", b"not an onnx graph"),
               "transformer_prefix.onnx .* cannot be loaded by onnxruntime", load="runtime"),
    BundleCase("tokenizer-not-json", _corrupt("tokenizer.json", b"{ not json"), "tokenizer.json .* is not a readable tokenizer", load="runtime"),
]


@dataclass
class RuntimeCliCase:
    id: str
    argv: List[str]  # "{d}": the case folder; "{bundle}": the tiny bundle
    match: str
    loads: bool = False  # the error comes from the bundle (after loading it); otherwise loading is forbidden


def _rg(*extra):
    return ["generate", "--bundle", "{bundle}", "--out", "{d}/out.png", *extra]


RUNTIME_CLI_CASES: List[RuntimeCliCase] = [
    RuntimeCliCase("steps-zero", _rg("--steps", "0"), "--steps"),
    RuntimeCliCase("steps-1001", _rg("--steps", "1001"), "--steps 1001 is too many"),
    RuntimeCliCase("steps-word", _rg("--steps", "abc"), "--steps"),
    RuntimeCliCase("num-images-zero", _rg("--num-images", "0"), "--num-images"),
    RuntimeCliCase("num-images-65", _rg("--num-images", "65"), "--num-images 65"),
    RuntimeCliCase("guidance-nan", _rg("--guidance-scale", "nan"), "--guidance-scale"),
    RuntimeCliCase("guidance-0.5", _rg("--guidance-scale", "0.5"), "--guidance-scale"),
    RuntimeCliCase("temperature-zero", _rg("--temperature", "0"), "--temperature"),
    RuntimeCliCase("temperature-inf", _rg("--temperature", "inf"), "--temperature"),
    RuntimeCliCase("seed-negative", _rg("--seed", "-1"), "--seed"),
    RuntimeCliCase("threads-zero", _rg("--threads", "0"), "--threads"),
    RuntimeCliCase("threads-negative", _rg("--threads", "-2"), "--threads"),
    RuntimeCliCase("height-zero", _rg("--height", "0"), "--height"),
    RuntimeCliCase("width-5000", _rg("--width", "5000"), "--width 5000 is too large"),
    RuntimeCliCase("provider-gpu", _rg("--provider", "gpu"), "--provider"),
    RuntimeCliCase("out-jpg", ["generate", "--bundle", "{bundle}", "--out", "{d}/out.jpg"], "--out"),
    RuntimeCliCase("out-xyz", ["generate", "--bundle", "{bundle}", "--out", "{d}/out.xyz"], "--out"),
    RuntimeCliCase("out-existing", ["generate", "--bundle", "{bundle}", "--out", "{d}/existing.png"], "--overwrite"),
    RuntimeCliCase("out-a-folder", ["generate", "--bundle", "{bundle}", "--out", "{d}/adir"], "--out"),
    RuntimeCliCase("out-under-a-file", ["generate", "--bundle", "{bundle}", "--out", "{d}/notimage.png/x.png"], "is a file, not a folder"),
    RuntimeCliCase("no-out", ["generate", "--bundle", "{bundle}"], "--out"),
    RuntimeCliCase("no-command", [], "COMMAND"),
    RuntimeCliCase("unknown-command", ["nope"], "invalid choice: 'nope'"),
    RuntimeCliCase("inpaint-mask-all-black", ["inpaint", "--bundle", "{bundle}", "--image", "{d}/a.png", "--mask", "{d}/black.png",
                                              "--out", "{d}/out.png"], "--mask selects no pixel"),
    RuntimeCliCase("inpaint-mask-other-size", ["inpaint", "--bundle", "{bundle}", "--image", "{d}/a.png", "--mask", "{d}/small_mask.png",
                                               "--out", "{d}/out.png"], "--mask is 10x10"),
    RuntimeCliCase("inpaint-image-not-an-image", ["inpaint", "--bundle", "{bundle}", "--image", "{d}/notimage.png", "--mask",
                                                  "{d}/mask.png", "--out", "{d}/out.png"], "cannot read --image"),
    RuntimeCliCase("inpaint-image-folder", ["inpaint", "--bundle", "{bundle}", "--image", "{d}/adir", "--mask", "{d}/mask.png",
                                            "--out", "{d}/out.png"], "--image .* is a folder"),
    RuntimeCliCase("outpaint-box-reversed", ["outpaint", "--bundle", "{bundle}", "--image", "{d}/a.png", "--box", "10", "0", "5", "10",
                                             "--out", "{d}/out.png"], "--box"),
    RuntimeCliCase("mix-refine-2", ["mix", "--bundle", "{bundle}", "--image", "{d}/a.png", "--style-image", "{d}/a.png", "--mask",
                                    "{d}/mask.png", "--refine-ratio", "2", "--out", "{d}/out.png"], "--refine-ratio"),
    RuntimeCliCase("mix-refine-nan", ["mix", "--bundle", "{bundle}", "--image", "{d}/a.png", "--style-image", "{d}/a.png", "--mask",
                                      "{d}/mask.png", "--refine-ratio", "nan", "--out", "{d}/out.png"], "--refine-ratio"),
    RuntimeCliCase("mix-style-missing", ["mix", "--bundle", "{bundle}", "--image", "{d}/a.png", "--style-image", "{d}/missing.png",
                                         "--mask", "{d}/mask.png", "--out", "{d}/out.png"], "--style-image .* does not exist"),
    # refused by the bundle's geometry or files (cheap: no graph runs)
    RuntimeCliCase("bundle-missing", ["generate", "--bundle", "{d}/missing", "--out", "{d}/out.png"], "bundle folder .* does not exist",
                   loads=True),
    RuntimeCliCase("bundle-a-file", ["generate", "--bundle", "{d}/notimage.png", "--out", "{d}/out.png"], "bundle folder .* does not exist",
                   loads=True),
    RuntimeCliCase("info-bundle-missing", ["info", "--bundle", "{d}/missing"], "does not exist", loads=True),
    RuntimeCliCase("height-the-bundle-cannot-make", _rg("--height", "100"), "cannot make a height=100", loads=True),
    RuntimeCliCase("outpaint-box-outside-the-output", ["outpaint", "--bundle", "{bundle}", "--image", "{d}/a.png", "--box", "0", "0", "40",
                                                       "40", "--out", "{d}/out.png"], r"image_box \(0, 0, 40, 40\) is outside", loads=True),
]


@dataclass
class StudioCase:
    id: str
    call: Callable  # call(studio): must raise gr.Error matching `match` (or, with returns_none, return None)
    match: str = ""
    returns_none: bool = False


def _editor(background=IMG, layers=(), composite=None):
    return {"background": background, "layers": list(layers), "composite": composite}


STUDIO_CASES: List[StudioCase] = [
    StudioCase("t2i-prompt-None", lambda s: s.text_to_image(None, 0, 2, 1), "Type a description"),
    StudioCase("t2i-prompt-int", lambda s: s.text_to_image(123, 0, 2, 1), "description must be text"),
    StudioCase("t2i-prompt-list", lambda s: s.text_to_image(["a"], 0, 2, 1), "description must be text"),
    StudioCase("t2i-seed-word", lambda s: s.text_to_image(PROMPT, "abc", 2, 1), "seed must be a whole number"),
    StudioCase("t2i-seed-1.5", lambda s: s.text_to_image(PROMPT, 1.5, 2, 1), "seed must be a whole number"),
    StudioCase("t2i-seed-nan", lambda s: s.text_to_image(PROMPT, NAN, 2, 1), "seed must be a whole number"),
    StudioCase("t2i-seed-inf", lambda s: s.text_to_image(PROMPT, INF, 2, 1), "seed must be a whole number"),
    StudioCase("t2i-seed-2^63", lambda s: s.text_to_image(PROMPT, 2**63, 2, 1), "seed must be a whole number"),
    StudioCase("t2i-seed-None", lambda s: s.text_to_image(PROMPT, None, 2, 1), "seed must be a whole number"),
    StudioCase("t2i-steps-None", lambda s: s.text_to_image(PROMPT, 0, None, 1), "Steps"),
    StudioCase("t2i-steps-word", lambda s: s.text_to_image(PROMPT, 0, "x", 1), "Steps"),
    StudioCase("t2i-steps-31", lambda s: s.text_to_image(PROMPT, 0, 31, 1), "Steps"),
    StudioCase("t2i-steps-2.5", lambda s: s.text_to_image(PROMPT, 0, 2.5, 1), "Steps"),
    StudioCase("t2i-steps-nan", lambda s: s.text_to_image(PROMPT, 0, NAN, 1), "Steps"),
    StudioCase("t2i-images-zero", lambda s: s.text_to_image(PROMPT, 0, 2, 0), "Number of images"),
    StudioCase("t2i-images-word", lambda s: s.text_to_image(PROMPT, 0, 2, "two"), "Number of images"),
    StudioCase("t2i-images-inf", lambda s: s.text_to_image(PROMPT, 0, 2, INF), "Number of images"),
    StudioCase("inpaint-background-missing-file", lambda s: s.inpaint(_editor("missing.png"), "", "lower half", 0, 2),
               "Cannot read the image to edit"),
    StudioCase("inpaint-background-int", lambda s: s.inpaint(_editor(123), "", "lower half", 0, 2), "Cannot read the image to edit"),
    StudioCase("inpaint-editor-a-path", lambda s: s.inpaint("missing.png", "", "lower half", 0, 2), "Cannot read the image to edit"),
    StudioCase("inpaint-layer-int", lambda s: s.inpaint(_editor(layers=[123]), "", "painted", 0, 2), "painted layer"),
    StudioCase("inpaint-prompt-int", lambda s: s.inpaint(_editor(), 5, "lower half", 0, 2), "description must be text"),
    StudioCase("inpaint-background-float-array", lambda s: s.inpaint(_editor(np.full((64, 48, 3), 300.0)), "", "lower half", 0, 2),
               "Cannot read the image to edit"),
    StudioCase("inpaint-steps-zero", lambda s: s.inpaint(_editor(), "", "lower half", 0, 0), "Steps"),
    StudioCase("ref-patch-int", lambda s: s.reference_edit(123, 0, 0, 16, 16, "", None, 0, 2), "Cannot read the reference patch"),
    StudioCase("ref-left-word", lambda s: s.reference_edit(IMG, "abc", 0, 16, 16, "", None, 0, 2), "left must be a number"),
    StudioCase("ref-right-nan", lambda s: s.reference_edit(IMG, 0, 0, NAN, 16, "", None, 0, 2), "right must be a whole number"),
    StudioCase("ref-bottom-inf", lambda s: s.reference_edit(IMG, 0, 0, 16, INF, "", None, 0, 2), "bottom must be a whole number"),
    StudioCase("ref-left-negative", lambda s: s.reference_edit(IMG, -8, 0, 16, 16, "", None, 0, 2), r"\(-8, 0, 16, 16\) is outside"),
    StudioCase("ref-right-empty-text", lambda s: s.reference_edit(IMG, 0, 0, " ", 16, "", None, 0, 2), "right is empty"),
    StudioCase("ref-base-missing-file", lambda s: s.reference_edit(IMG, 0, 0, 16, 16, "", "missing.png", 0, 2), "Cannot read the base garment"),
    StudioCase("ref-base-int", lambda s: s.reference_edit(IMG, 0, 0, 16, 16, "", 123, 0, 2), "Cannot read the base garment"),
    StudioCase("ref-seed-negative", lambda s: s.reference_edit(IMG, 0, 0, 16, 16, "", None, -5, 2), "seed"),
    StudioCase("mix-no-base", lambda s: s.style_mix(None, IMG, "lower half", 0, 2), "No base garment"),
    StudioCase("mix-style-missing-file", lambda s: s.style_mix(_editor(), "missing.png", "lower half", 0, 2), "Cannot read the style garment"),
    StudioCase("mix-preset-bogus", lambda s: s.style_mix(_editor(), IMG, "bogus", 0, 2), "Unknown mask preset 'bogus'"),
    StudioCase("mix-steps-zero", lambda s: s.style_mix(_editor(), IMG, "lower half", 0, 0), "Steps"),
    StudioCase("out-no-image", lambda s: s.outpaint(None, 16, 16, 48, 48, "", 0, 2), "No image to extend"),
    StudioCase("out-image-missing-file", lambda s: s.outpaint("missing.png", 16, 16, 48, 48, "", 0, 2), "Cannot read the image to extend"),
    StudioCase("out-top-word", lambda s: s.outpaint(IMG, 16, "x", 48, 48, "", 0, 2), "top must be a number"),
    StudioCase("out-box-empty", lambda s: s.outpaint(IMG, 10, 10, 10, 20, "", 0, 2), r"\(10, 10, 10, 20\) is outside .* or empty"),
    StudioCase("out-prompt-float", lambda s: s.outpaint(IMG, 16, 16, 48, 48, 1.5, 0, 2), "description must be text"),
    # previews show nothing (None) for a bad box or upload, never an error
    StudioCase("preview-ref-patch-int", lambda s: s.preview_reference(123, 0, 0, 16, 16), returns_none=True),
    StudioCase("preview-ref-box-outside", lambda s: s.preview_reference(IMG, 0, 0, 999, 16), returns_none=True),
    StudioCase("preview-out-image-missing-file", lambda s: s.preview_outpaint("missing.png", 16, 16, 48, 48), returns_none=True),
    StudioCase("preview-out-left-None", lambda s: s.preview_outpaint(IMG, None, 16, 48, 48), returns_none=True),
]

SURFACES = {
    "pipeline (Python API)": PIPELINE_CASES,
    "m6-fashion CLI": CLI_CASES,
    "runtime (Python API)": RUNTIME_API_CASES,
    "runtime bundles": BUNDLE_CASES,
    "m6-fashion-runtime CLI": RUNTIME_CLI_CASES,
    "studio (Studio handlers)": STUDIO_CASES,
}


def test_the_catalogue_has_enough_distinct_cases():
    counts = {name: len(cases) for name, cases in SURFACES.items()}
    total = sum(counts.values())
    print("\ndistinct bad inputs per surface: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + f"; total {total}")
    for name, cases in SURFACES.items():
        ids = [c.id for c in cases]
        assert len(ids) == len(set(ids)), f"{name}: duplicate case ids"
    assert total >= 150, counts
    assert sum(1 for c in CLI_CASES if c.subprocess) >= 5  # real processes prove no traceback reaches the user


# ============================================================================================== pipeline
@pytest.mark.parametrize("case", PIPELINE_CASES, ids=lambda c: c.id)
def test_pipeline_refuses_bad_input_naming_it(tiny_pipeline, case):
    kwargs = dict(case.kwargs)
    kwargs.setdefault("prompt", PROMPT)
    kwargs.setdefault("output_type", "tokens")
    guard = mock.patch.object(type(tiny_pipeline), "encode_images", side_effect=AssertionError("encoded before checking"))
    forward = mock.patch.object(type(tiny_pipeline), "_forward", side_effect=AssertionError("sampled before checking"))
    with guard if case.early else contextlib.nullcontext(), forward if case.early else contextlib.nullcontext():
        with pytest.raises(case.error, match=case.match):
            tiny_pipeline(**kwargs)


# ============================================================================================== m6-fashion CLI
def _snapshot(folder: Path) -> Dict[str, str]:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(folder.rglob("*"))}


def _make_inputs(d: Path) -> Path:
    """Input files for the CLI cases: images, masks, a non-image, an empty file, a folder, an existing output."""
    d.mkdir(parents=True, exist_ok=True)
    _img(48, 64).save(d / "a.png")
    _mask(48, 64).save(d / "mask.png")
    PIL.Image.new("L", (48, 64), 0).save(d / "black.png")
    _mask(10, 10).save(d / "small_mask.png")
    PIL.Image.new("F", (48, 64), 0.5).save(d / "float.tiff")
    (d / "notimage.png").write_text("this is not a picture")
    (d / "empty.png").write_bytes(b"")
    (d / "adir").mkdir(exist_ok=True)
    (d / "existing.png").write_bytes(b"precious")
    (d / "pair-1.png").write_bytes(b"precious too")
    return d


@pytest.fixture(scope="module")
def tiny_model_dir(tiny_pipeline, tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz_tiny_model")
    tiny_pipeline.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def cli_dir(tmp_path_factory, tiny_model_dir):
    d = _make_inputs(tmp_path_factory.mktemp("fuzz_cli"))
    # damaged copies of the tiny model without their checksum manifest (so nothing catches the damage before loading)
    for name, damage in (("truncated_model", "transformer/model.safetensors"), ("broken_config_model", "transformer/config.json")):
        shutil.copytree(tiny_model_dir, d / name)
        (d / name / "checksums.sha256").unlink()
        target = d / name / damage
        target.write_bytes(target.read_bytes()[:40])
    return d


def _fill(argv: List[str], **values) -> List[str]:
    return [a.format(**values) for a in argv]


def _run_main(main, argv, capsys) -> Tuple[int, str, str]:
    """Runs a CLI `main(argv)` in this process: (exit status, stderr message, stdout)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out = capsys.readouterr()
    code = exit_info.value.code
    if isinstance(code, str):  # raise SystemExit("error: ...") prints the string and exits 1
        return 1, out.err + code + "\n", out.out
    return code, out.err, out.out


def _assert_one_error_line(code, err, out, match):
    """Exit status != 0, nothing on stdout, and on stderr one `error: ...` line (besides a model-loading progress bar)."""
    assert code not in (0, None), err
    assert out == "", out
    assert "Traceback" not in err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and not re.search(r"\d+%\|", line)]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(match, lines[0]), (match, lines[0])


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda c: c.id)
def test_cli_refuses_bad_input_with_one_error_line(case, cli_dir, tiny_model_dir, capsys, monkeypatch):
    from m6_fashion import M6FashionPipeline
    from m6_fashion.cli import main

    if not case.loads:
        monkeypatch.setattr(M6FashionPipeline, "from_pretrained",
                            classmethod(lambda cls, *a, **k: (_ for _ in ()).throw(AssertionError("loaded a model before refusing"))))
    argv = _fill(case.argv, d=cli_dir, model=tiny_model_dir)
    before = _snapshot(cli_dir)
    code, err, out = _run_main(main, argv, capsys)
    _assert_one_error_line(code, err, out, case.match)
    assert _snapshot(cli_dir) == before, "a file was written or overwritten"


def test_cli_errors_in_real_processes_have_no_traceback(cli_dir):
    """A handful of the cases as the user runs them: `python -m m6_fashion ...`, one line on stderr, exit status != 0."""
    cases = [c for c in CLI_CASES if c.subprocess]
    before = _snapshot(cli_dir)
    for case in cases:
        r = subprocess.run([sys.executable, "-m", "m6_fashion", *_fill(case.argv, d=cli_dir, model="")], capture_output=True,
                           text=True, env=subprocess_env(), timeout=120)
        _assert_one_error_line(r.returncode, r.stderr, r.stdout, case.match)
    assert _snapshot(cli_dir) == before
    assert (cli_dir / "existing.png").read_bytes() == b"precious"


def test_cli_limits_repeat_the_libraries():
    """The CLI checks numbers before importing torch, with its own copies of the library's limits."""
    from m6_fashion import cli
    from m6_fashion.pipelines import pipeline_m6fashion as pl
    from m6_fashion.schedulers import scheduling_smart as sm

    assert cli.MAX_STEPS == sm.MAX_INFERENCE_STEPS and cli.MAX_TEMPERATURE == sm.MAX_TEMPERATURE
    assert cli.MAX_GUIDANCE_SCALE == pl.MAX_GUIDANCE_SCALE and cli.MAX_NUM_IMAGES == pl.MAX_IMAGES_PER_CALL
    import m6_fashion_runtime.cli as rcli
    import m6_fashion_runtime.pipeline as rpl
    import m6_fashion_runtime.scheduler as rsm

    assert (rcli.MAX_STEPS, rcli.MAX_TEMPERATURE) == (rsm.MAX_INFERENCE_STEPS, rsm.MAX_TEMPERATURE) == (sm.MAX_INFERENCE_STEPS, sm.MAX_TEMPERATURE)
    assert (rcli.MAX_GUIDANCE_SCALE, rcli.MAX_NUM_IMAGES) == (rpl.MAX_GUIDANCE_SCALE, rpl.MAX_IMAGES_PER_CALL) == (
        pl.MAX_GUIDANCE_SCALE, pl.MAX_IMAGES_PER_CALL)


# ============================================================================================== runtime
@pytest.fixture(scope="module")
def rt(tiny_onnx_bundle):
    import m6_fashion_runtime as mrt

    return mrt.M6FashionRuntime(str(tiny_onnx_bundle), num_threads=1)


@pytest.mark.parametrize("case", RUNTIME_API_CASES, ids=lambda c: c.id)
def test_runtime_refuses_bad_input_naming_it(rt, case):
    with mock.patch.object(type(rt), "encode_images", side_effect=AssertionError("encoded before checking")), \
            mock.patch.object(type(rt), "transformer_logits", side_effect=AssertionError("sampled before checking")):
        with pytest.raises(case.error, match=case.match):
            case.call(rt)


def _bundle_copy(src: Path, dst: Path) -> Path:
    """A copy of the bundle folder: bundle.json and the tokenizer copied, the graphs linked."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.suffix == ".onnx":
            os.symlink(f, dst / f.name)
        else:
            (dst / f.name).write_bytes(f.read_bytes())
    return dst


@pytest.mark.parametrize("case", BUNDLE_CASES, ids=lambda c: c.id)
def test_bad_bundles_are_refused_naming_the_file_or_key(tiny_onnx_bundle, tmp_path, case):
    import m6_fashion_runtime as mrt

    root = _bundle_copy(tiny_onnx_bundle, tmp_path / "bundle")
    cfg = json.loads((root / "bundle.json").read_text())
    case.edit(cfg, root)
    (root / "bundle.json").write_text(json.dumps(cfg.get("__replace__", cfg)))
    with pytest.raises(ValueError, match=case.match) as e:  # BundleError is a ValueError
        if case.load == "bundle":
            mrt.load_bundle(str(root))
        else:
            mrt.M6FashionRuntime(str(root))("x", num_inference_steps=1, output_type="tokens")
    assert "bundle.json" in str(e.value) or str(root) in str(e.value)  # names the file or the folder


@pytest.fixture(scope="module")
def runtime_cli_dir(tmp_path_factory):
    return _make_inputs(tmp_path_factory.mktemp("fuzz_runtime_cli"))


@pytest.mark.parametrize("case", RUNTIME_CLI_CASES, ids=lambda c: c.id)
def test_runtime_cli_refuses_bad_input_with_one_error_line(case, runtime_cli_dir, tiny_onnx_bundle, capsys, monkeypatch):
    import m6_fashion_runtime.pipeline as rpl
    from m6_fashion_runtime.cli import main

    if not case.loads:
        def forbidden(self, *a, **k):
            raise AssertionError("loaded the bundle before refusing")
        monkeypatch.setattr(rpl.M6FashionRuntime, "__init__", forbidden)
    else:  # the bundle may be read, but no graph may run
        monkeypatch.setattr(rpl.M6FashionRuntime, "_session", lambda self, key: (_ for _ in ()).throw(AssertionError("ran a graph")))
    argv = _fill(case.argv, d=runtime_cli_dir, bundle=tiny_onnx_bundle)
    before = _snapshot(runtime_cli_dir)
    code, err, out = _run_main(main, argv, capsys)
    _assert_one_error_line(code, err, out, case.match)
    assert _snapshot(runtime_cli_dir) == before, "a file was written or overwritten"


def test_runtime_cli_errors_in_real_processes_have_no_traceback(runtime_cli_dir, tiny_onnx_bundle):
    picked = [c for c in RUNTIME_CLI_CASES if c.id in ("steps-zero", "guidance-nan", "out-existing", "inpaint-mask-all-black",
                                                       "height-the-bundle-cannot-make")]
    env = subprocess_env()
    env["PYTHONPATH"] = os.pathsep.join([str(RUNTIME_SRC), env.get("PYTHONPATH", "")])
    before = _snapshot(runtime_cli_dir)
    for case in picked:
        r = subprocess.run([sys.executable, "-m", "m6_fashion_runtime", *_fill(case.argv, d=runtime_cli_dir, bundle=tiny_onnx_bundle)],
                           capture_output=True, text=True, env=env, timeout=120)
        _assert_one_error_line(r.returncode, r.stderr, r.stdout, case.match)
    assert _snapshot(runtime_cli_dir) == before


# ============================================================================================== studio
class _NoRun:
    """Stands in for the pipeline once the Studio is built: any generation is a failure of the test."""

    def __init__(self, pipe):
        self._pipe = pipe

    def __getattr__(self, name):
        return getattr(self._pipe, name)

    def __call__(self, *a, **k):
        raise AssertionError("the pipeline ran on bad input")


@pytest.fixture(scope="module")
def studio(tiny_hr_pipeline):
    pytest.importorskip("gradio", reason="the studio needs Gradio: pip install -e '.[studio]'")
    from m6_fashion.studio import Studio

    s = Studio(tiny_hr_pipeline)
    s.pipe = _NoRun(tiny_hr_pipeline)
    return s


@pytest.mark.parametrize("case", STUDIO_CASES, ids=lambda c: c.id)
def test_studio_refuses_bad_input_with_a_message(studio, case):
    import gradio as gr

    if case.returns_none:
        assert case.call(studio) is None
        return
    with pytest.raises(gr.Error, match=case.match):
        case.call(studio)


# ============================================================================================== properties
def _real(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


ANY_SCALAR = st.one_of(st.none(), st.booleans(), st.text(max_size=3), st.floats(allow_nan=True, allow_infinity=True),
                       st.integers(-10**12, 10**12), st.lists(st.integers(0, 3), max_size=2))
SIDES = [32, 40, 48, 56, 64]  # the tiny pipeline's 64 px canvas, 16 cells: centred crops of at least half its side


def _invalid_sampling_numbers(temperature, guidance_scale, steps, refine_ratio, style_mixing: bool) -> list:
    """The names among the sampling numbers that the pipeline and the runtime must refuse (their documented ranges;
    `refine_ratio` acts in style mixing only, so any value but its default is refused in other calls)."""
    invalid = []
    if not (temperature is None or (_real(temperature) and math.isfinite(temperature) and 0 < temperature <= 100)):
        invalid.append("temperature")
    if not (guidance_scale is None or (_real(guidance_scale) and math.isfinite(guidance_scale) and 1 <= guidance_scale <= 50)):
        invalid.append("guidance_scale")
    if not (_int(steps) and 1 <= steps <= 1000):
        invalid.append("num_inference_steps")
    if not (_real(refine_ratio) and 0 <= refine_ratio <= 1 and (style_mixing or refine_ratio == 0.25)):
        invalid.append("refine_ratio")
    return invalid


@FUZZ
@given(
    temperature=st.one_of(st.none(), st.floats(0.05, 100), ANY_SCALAR),
    guidance_scale=st.one_of(st.none(), st.floats(1, 50), ANY_SCALAR),
    steps=st.one_of(st.integers(1, 3), st.integers(-5, 0), st.integers(1001, 10**9), ANY_SCALAR),
    refine_ratio=st.one_of(st.just(0.25), st.floats(0, 1), ANY_SCALAR),
    height=st.one_of(st.none(), st.sampled_from(SIDES), st.integers(-100, 300), ANY_SCALAR),
    width=st.one_of(st.none(), st.sampled_from(SIDES), st.integers(-100, 300), ANY_SCALAR),
)
def test_pipeline_numbers_work_when_valid_and_are_refused_naming_them_otherwise(tiny_pipeline, temperature, guidance_scale,
                                                                                steps, refine_ratio, height, width):
    invalid = _invalid_sampling_numbers(temperature, guidance_scale, steps, refine_ratio, style_mixing=False)
    for name, v in (("height", height), ("width", width)):
        if not (v is None or (_int(v) and v in SIDES)):
            invalid.append(name)
    kwargs = dict(temperature=temperature, guidance_scale=guidance_scale, num_inference_steps=steps, refine_ratio=refine_ratio,
                  height=height, width=width, output_type="tokens", generator=torch.Generator().manual_seed(0))
    if not invalid:
        out = tiny_pipeline(PROMPT, **kwargs)
        assert out.tokens.shape == (1, 16, 16, 4) and int(out.tokens.max()) < 256
        return
    with mock.patch.object(type(tiny_pipeline), "_forward", side_effect=AssertionError("sampled before checking")):
        with pytest.raises((ValueError, TypeError)) as e:
            tiny_pipeline(PROMPT, **kwargs)
    assert any(name in str(e.value) for name in invalid), (invalid, str(e.value))


@FUZZ
@given(
    temperature=st.one_of(st.none(), st.floats(0.05, 100), ANY_SCALAR),
    guidance_scale=st.one_of(st.none(), st.floats(1, 50), ANY_SCALAR),
    steps=st.one_of(st.integers(1, 3), st.integers(-5, 0), st.integers(1001, 10**9), ANY_SCALAR),
    refine_ratio=st.one_of(st.just(0.25), st.floats(0, 1), ANY_SCALAR),
    seed=st.one_of(st.none(), st.integers(0, 2**70), ANY_SCALAR),
    num_images=st.one_of(st.integers(1, 2), st.integers(-3, 0), st.integers(65, 10**7), ANY_SCALAR),
)
def test_runtime_numbers_work_when_valid_and_are_refused_naming_them_otherwise(rt, temperature, guidance_scale, steps,
                                                                               refine_ratio, seed, num_images):
    """The runtime accepts exactly what the pipeline accepts (no NaN guidance, no endless loop of steps, no 10^7 images)."""
    invalid = _invalid_sampling_numbers(temperature, guidance_scale, steps, refine_ratio, style_mixing=False)
    if not (seed is None or (_int(seed) and seed >= 0)):
        invalid.append("seed")
    if not (_int(num_images) and 1 <= num_images <= 64):
        invalid.append("num_images_per_prompt")
    kwargs = dict(temperature=temperature, guidance_scale=guidance_scale, num_inference_steps=steps, refine_ratio=refine_ratio,
                  seed=seed, num_images_per_prompt=num_images, output_type="tokens")
    if not invalid:
        out = rt("Men Navy Blue Shirt", **kwargs)
        assert out.tokens.shape == (num_images, 8, 8, 4) and 0 <= out.tokens.min() and out.tokens.max() < 32
        return
    with mock.patch.object(type(rt), "transformer_logits", side_effect=AssertionError("sampled before checking")):
        with pytest.raises((ValueError, TypeError)) as e:
            rt("Men Navy Blue Shirt", **kwargs)
    assert any(name in str(e.value) for name in invalid), (invalid, str(e.value))


BOX_NUMBER = st.one_of(st.integers(-20, 90), st.floats(-20, 90), st.sampled_from([NAN, INF, -INF]), st.text(max_size=2), st.none())


@FUZZ
@given(box=st.one_of(st.lists(BOX_NUMBER, min_size=4, max_size=4), st.lists(BOX_NUMBER, max_size=6), ANY_SCALAR),
       height=st.sampled_from(SIDES), width=st.sampled_from(SIDES))
def test_boxes_map_to_cells_inside_the_grid_or_are_refused(tiny_pipeline, box, height, width):
    import m6_fashion_runtime.canvas as rcanvas

    canvas = tiny_pipeline.output_canvas(height, width)
    rt_canvas = rcanvas.output_canvas([64], 16, height, width)
    valid = isinstance(box, list) and len(box) == 4
    if valid:
        try:  # numbers, or text that reads as a number (a box typed into a form)
            values = [float(v) for v in box]
        except (TypeError, ValueError):
            values = []
        valid = len(values) == 4 and all(math.isfinite(v) for v in values)
    if valid:
        l, t, r, b = (int(round(v)) for v in values)
        valid = 0 <= l < r <= width and 0 <= t < b <= height
    if valid:
        top, left, h, w = canvas.box_to_cells(box, "image_box")
        assert 0 <= top and 0 <= left and h >= 1 and w >= 1 and top + h <= 16 and left + w <= 16
        assert rt_canvas.box_to_cells(box) == (top, left, h, w)
        tiny_pipeline.check_inputs(PROMPT, IMG, None, None, box, None, 1, 1, 1.0, "pil", None, height=height, width=width)
        return
    for f in (lambda: canvas.box_to_cells(box, "image_box"), lambda: rt_canvas.box_to_cells(box, "image_box")):
        with pytest.raises(ValueError, match="image_box"):
            f()


PIL_MODES = ["1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "F", "LA", "PA", "RGBX", "RGBa", "La",
             "I;16", "I;16L", "I;16B"]


def _pil(mode, w, h, value):
    """A `mode` image of w x h filled with `value` (16-bit and 32-bit modes take it whole, 8-bit ones modulo 256)."""
    bands = PIL.Image.getmodebands(mode)
    if mode in ("I", "I;16", "I;16L", "I;16B"):
        color = value
    elif mode == "F":
        color = value / 65535
    else:
        color = tuple([value % 256] * bands) if bands > 1 else value % 256
    try:
        return PIL.Image.new(mode, (w, h), color)
    except (TypeError, ValueError):
        return PIL.Image.new(mode, (w, h))


@FUZZ
@given(mode=st.sampled_from(PIL_MODES), w=st.integers(0, 40), h=st.integers(0, 40), value=st.integers(0, 65535),
       size=st.sampled_from([8, 16, 32]))
def test_any_pil_image_or_mask_is_preprocessed_or_refused_naming_it(mode, w, h, value, size):
    from m6_fashion.image_processing import ACCEPTED_MODES, preprocess, preprocess_mask
    from m6_fashion_runtime import image as rimage

    im = _pil(mode, w, h, value)
    ok = mode in ACCEPTED_MODES and w > 0 and h > 0
    for name, run in (("image", lambda: preprocess(im, size, "image")), ("rt image", lambda: rimage.preprocess(im, size, "image"))):
        if ok:
            out = np.asarray(run())
            assert out.shape == (1, 3, size, size) and np.isfinite(out).all() and out.min() >= -1 and out.max() <= 1, name
        else:
            with pytest.raises((ValueError, TypeError), match="image"):
                run()
    if ok:  # the runtime reads images exactly as the pipeline does
        np.testing.assert_allclose(rimage.preprocess(im, size), preprocess(im, size).numpy(), atol=1e-6)
    for name, run in (("mask", lambda: preprocess_mask(im, size)), ("rt mask", lambda: rimage.preprocess_mask(im, size))):
        try:
            m = np.asarray(run())
        except (ValueError, TypeError) as e:
            assert "mask_image" in str(e), (name, e)
            assert w == 0 or h == 0 or mode in ("La", "LAB"), (mode, e)  # only these cannot be read as a mask
            continue
        assert m.shape == (1, size, size) and set(np.unique(m)) <= {0.0, 1.0}, name


DTYPES = [np.uint8, np.int16, np.int64, np.uint16, np.float32, np.float64, np.bool_, np.complex64]


@st.composite
def arrays(draw):
    ndim = draw(st.integers(1, 5))
    shape = tuple(draw(st.sampled_from([0, 1, 2, 3, 4, 5, 8])) for _ in range(ndim))
    dtype = draw(st.sampled_from(DTYPES))
    lo, hi = draw(st.sampled_from([(0, 1), (0, 255), (-1, 1), (0, 300), (-5, 0)]))
    special = draw(st.sampled_from([None, None, None, NAN, INF]))
    arr = np.random.default_rng(draw(st.integers(0, 10))).uniform(lo, hi, shape)
    if special is not None and arr.size and np.issubdtype(np.dtype(dtype), np.floating):
        arr.flat[0] = special
    return arr.astype(dtype) if dtype is not np.bool_ else arr > (lo + hi) / 2


def _valid_image_array(a: np.ndarray) -> bool:
    if a.ndim == 4:
        return a.shape[0] >= 1 and all(_valid_image_array(x) for x in a)
    if a.ndim == 3:
        if a.shape[-1] not in (1, 3, 4):
            return False
    elif a.ndim != 2:
        return False
    if a.shape[0] < 1 or a.shape[1] < 1:
        return False
    if a.dtype == np.uint8 or a.dtype == np.bool_:
        return True
    if np.issubdtype(a.dtype, np.integer):
        return bool(a.min() >= 0 and a.max() <= 255)
    if np.issubdtype(a.dtype, np.floating):
        return bool(np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1)
    return False


@FUZZ
@given(arr=arrays(), size=st.sampled_from([8, 16]))
def test_any_numpy_array_is_preprocessed_or_refused_naming_it(arr, size):
    from m6_fashion.image_processing import preprocess, preprocess_mask
    from m6_fashion_runtime import image as rimage

    if _valid_image_array(arr):
        out = preprocess(arr, size, "style_image")
        assert out.shape == (arr.shape[0] if arr.ndim == 4 else 1, 3, size, size) and out.abs().max() <= 1
        if arr.ndim < 4:
            np.testing.assert_allclose(rimage.preprocess(arr, size), out.numpy(), atol=1e-6)
    else:
        with pytest.raises((ValueError, TypeError), match="style_image"):
            preprocess(arr, size, "style_image")
    for run in (lambda: preprocess_mask(arr, size), lambda: rimage.preprocess_mask(arr, size)):
        try:
            m = np.asarray(run())
        except (ValueError, TypeError) as e:
            assert "mask_image" in str(e), e
            continue
        assert m.shape == (1, size, size) and set(np.unique(m)) <= {0.0, 1.0}
    if arr.ndim == 2 and arr.size and _valid_image_array(arr):  # a plain greyscale / bool / [0, 1] mask always works
        assert preprocess_mask(arr, size).shape == (1, size, size)


@FUZZ
@given(shape=st.lists(st.sampled_from([0, 1, 2, 3, 4, 8]), min_size=1, max_size=5),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.uint8, torch.int64, torch.bool]),
       scale=st.sampled_from([1.0, 0.5, 255.0, NAN, INF]), size=st.sampled_from([8, 16]))
def test_any_tensor_is_preprocessed_or_refused_naming_it(shape, dtype, scale, size):
    from m6_fashion.image_processing import preprocess, preprocess_mask

    t = (torch.rand(*shape, generator=torch.Generator().manual_seed(0)) * 2 - 1) * scale
    t = t.to(dtype) if dtype is not torch.bool else t > 0
    valid = (len(shape) in (3, 4) and shape[-3] == 3 and all(s > 0 for s in shape) and t.is_floating_point()
             and bool(torch.isfinite(t.float()).all()) and float(t.float().abs().max()) <= 1.001)
    if valid:
        out = preprocess(t, size)
        assert out.shape == (1 if len(shape) == 3 else shape[0], 3, size, size) and out.abs().max() <= 1
    else:
        with pytest.raises((ValueError, TypeError), match="image"):
            preprocess(t, size)
    try:
        m = preprocess_mask(t, size)
    except (ValueError, TypeError) as e:
        assert "mask_image" in str(e), e
    else:
        assert m.shape == (1, size, size) and set(m.unique().tolist()) <= {0.0, 1.0}


@FUZZ
@given(value=st.one_of(st.integers(), st.text(max_size=4), st.none(), st.booleans(), st.floats(), st.binary(max_size=4),
                       st.lists(st.none(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2)))
def test_non_images_are_refused_with_a_type_error_naming_the_argument(value):
    from m6_fashion.image_processing import preprocess, preprocess_mask
    from m6_fashion_runtime import image as rimage

    for name, run in (("reference_images[0]", lambda: preprocess(value, 8, "reference_images[0]")),
                      ("reference_images[0]", lambda: rimage.preprocess(value, 8, "reference_images[0]")),
                      ("mask_image", lambda: preprocess_mask(value, 8)), ("mask_image", lambda: rimage.preprocess_mask(value, 8))):
        with pytest.raises((TypeError, ValueError)) as e:
            run()
        assert name in str(e.value), str(e.value)
