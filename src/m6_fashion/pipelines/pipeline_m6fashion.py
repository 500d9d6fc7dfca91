"""`M6FashionPipeline`: every task of M6-Fashion behind one diffusers pipeline, sampled with SMART.

Tasks (all through `__call__`):

| task                          | arguments                                                        |
|-------------------------------|------------------------------------------------------------------|
| unconditional generation      | nothing (or `prompt=""`)                                         |
| text-to-image                 | `prompt`                                                         |
| (text-guided) inpainting      | `image`, `mask_image` (white = regenerate), optionally `prompt`  |
| outpainting                   | `image`, `image_box` (the image, aspect kept, fits in the box; the rest is new) |
| local editing with a patch    | `reference_images=[(patch_image, box)]`, optionally `image`      |
| text-guided local editing     | `prompt` + `reference_images`                                    |
| style mixing of two garments  | `image`, `style_image`, `mask_image` (region taken from style)   |
| several visual conditions     | `reference_images` with several `(image, box)` pairs             |

Output size: `height` x `width` pixels. The model paints a square canvas (white padding around portrait
photos, as the training photos were padded); the output is its centred crop. With the high-resolution decoder
(`decoder_hr`, 16x16 tokens -> 256x256) the default output is the 192x256 portrait of a catalogue photo; without
it, the `sample_size` square (64x64). `pipe.output_sizes()` lists what a pipeline can make.

Boxes are pixel boxes `(left, top, right, bottom)` on the output image (`width` x `height`), PIL's crop
convention; they are mapped outwards to whole token cells. Input images and masks may have any size: they are
padded to a square on white (masks on black) and resized, as the training photos were.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils import logging as diffusers_logging
from transformers import PreTrainedTokenizerBase

# The Hub card template lives in m6_fashion.hub (shared with `m6-fashion finetune`); these names stay importable here.
from ..hub import HUB_METADATA, with_hub_metadata  # noqa: F401
from ..image_processing import PipelineImageInput, fit_onto, postprocess, preprocess, preprocess_mask
from ..models.pq_tokenizer import PQTokenizer
from ..models.sequence_layout import build_model_inputs, split_prefix_and_target
from ..models.style_decoder import StyleDecoder
from ..models.transformer_m6fashion import M6FashionTransformer
from ..schedulers.scheduling_smart import MAX_INFERENCE_STEPS, SMARTScheduler, check_temperature

# a child of diffusers' library logger: `diffusers.utils.logging.set_verbosity_error()` silences it, as it silences
# diffusers' own pipelines
logger = diffusers_logging.get_logger("diffusers.pipelines.m6_fashion")

# share of the SMART passes that, by default, hide the kept tokens in text-guided inpainting (context_dropout_steps)
CONTEXT_DROPOUT_SHARE = 0.8
MAX_IMAGES_PER_CALL = 64  # prompts x num_images_per_prompt; bounds memory (one batch of 64 needs ~2 GB on CPU)
MAX_GUIDANCE_SCALE = 50.0
DEFAULT_REFINE_RATIO = 0.25  # share of the cells around a style-mixing seam that SMART re-samples

Box = Tuple[int, int, int, int]

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> from m6_fashion import M6FashionPipeline
        >>> pipe = M6FashionPipeline.from_pretrained()            # the shipped default model
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> shirt = pipe("Men Navy Blue Casual Shirt", generator=g).images[0]
        >>> # text-guided inpainting of the lower half
        >>> import PIL.Image
        >>> mask = PIL.Image.new("L", shirt.size, 0); mask.paste(255, (0, shirt.height // 2, *shirt.size))
        >>> edited = pipe("Men Red Casual Shirt", image=shirt, mask_image=mask, generator=g).images[0]
        ```
"""


def _crop_sides(side: int, grid: int) -> List[int]:
    """Output sides a `side`-pixel canvas of `grid` cells can make: centred crops of at least half the side whose
    margins are whole token cells."""
    step = 2 * (side // grid)
    return sorted(range(side, side // 2 - 1, -step))


def _portrait_width(side: int, grid: int) -> int:
    """The crop side nearest to 3/4 of `side` (the 3:4 portrait of a catalogue photo: 192 for 256)."""
    return min(_crop_sides(side, grid), key=lambda v: abs(v - 0.75 * side))


@dataclass(frozen=True)
class OutputCanvas:
    """Where an output image sits on the square the decoder paints.

    The decoder paints `side` x `side` pixels (`grid` x `grid` token cells); the output is the centred
    `height` x `width` crop. Boxes are pixel boxes on the output.
    """

    side: int
    grid: int
    height: int
    width: int

    @property
    def cell(self) -> int:
        """Pixels per token cell on this canvas."""
        return self.side // self.grid

    @property
    def offset(self) -> Tuple[int, int]:
        """`(top, left)` of the output inside the canvas, in pixels."""
        return (self.side - self.height) // 2, (self.side - self.width) // 2

    def box_to_cells(self, box: Sequence[int], name: str = "box") -> Tuple[int, int, int, int]:
        """Pixel box (left, top, right, bottom) on the output -> grid box (top, left, height, width), rounded outwards.
        `name` is the argument named in errors (`image_box`, `reference_images[0] box`)."""
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

    def cells_mask(self, cells: Sequence[Tuple[int, int, int, int]], value: float, batch: int) -> torch.Tensor:
        """(batch, 1, side, side) filled with `1 - value`, with `value` on the given grid boxes."""
        m = torch.full((batch, 1, self.side, self.side), 1.0 - value)
        c = self.cell
        for top, left, h, w in cells:
            m[:, :, top * c : (top + h) * c, left * c : (left + w) * c] = value
        return m

    def crop(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, C, side, side) -> (B, C, height, width), the centred crop."""
        y0, x0 = self.offset
        return pixels[..., y0 : y0 + self.height, x0 : x0 + self.width]


@dataclass
class M6FashionPipelineOutput(BaseOutput):
    """
    Args:
        images: list of PIL images, a uint8 array `(B, H, W, 3)` or a float tensor `(B, 3, H, W)` in [-1, 1];
            `None` when `output_type="tokens"`.
        tokens (`torch.LongTensor` of shape `(B, h, w, M)`): the generated token grids.
    """

    images: Union[List[PIL.Image.Image], np.ndarray, torch.Tensor, None] = None
    tokens: Optional[torch.LongTensor] = None


class M6FashionPipeline(DiffusionPipeline):
    r"""Multi-modal fashion image generation and editing (M6-Fashion, KDD'22).

    Components:
        image_tokenizer ([`PQTokenizer`]): images -> PQ token grids `(B, h, w, M)`.
        decoder ([`StyleDecoder`]): latents of token grids -> images on the `sample_size` canvas.
        decoder_hr ([`StyleDecoder`], *optional*): the same latents -> images on a larger canvas (more
            upsampling levels, trained on the high-resolution photos); used for outputs larger than `sample_size`.
        transformer ([`M6FashionTransformer`]): the masked multi-modal transformer.
        tokenizer ([`PreTrainedTokenizerFast`]): caption tokenizer of the transformer.
        scheduler ([`SMARTScheduler`]): the SMART mask-predict sampler.
    """

    model_cpu_offload_seq = "transformer->decoder->decoder_hr"
    _optional_components = ["decoder_hr"]
    _callback_tensor_inputs = ["tokens"]

    def __init__(
        self,
        image_tokenizer: PQTokenizer,
        decoder: StyleDecoder,
        transformer: M6FashionTransformer,
        tokenizer: PreTrainedTokenizerBase,
        scheduler: SMARTScheduler,
        decoder_hr: Optional[StyleDecoder] = None,
    ):
        super().__init__()
        check_components(image_tokenizer, transformer, scheduler, decoder=decoder, decoder_hr=decoder_hr)
        self.register_modules(
            image_tokenizer=image_tokenizer, decoder=decoder, transformer=transformer, tokenizer=tokenizer, scheduler=scheduler,
            decoder_hr=decoder_hr,
        )

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Optional[str] = None, **kwargs):
        """Loads a pipeline folder or Hub repo (safetensors only), or a shipped model by name.

        Without a path: the shipped default, `m6-fashion-hr` (192x256 outputs); `"m6-fashion-64"` loads the
        same model without its high-resolution decoder (64x64 outputs). See `m6_fashion.default_model`.

        Weights are loaded in float32 unless `dtype` says otherwise (the shipped model stores float16);
        `dtype` may be one dtype or a dict per component (`{"transformer": torch.bfloat16, "default":
        torch.float32}`). The older name `torch_dtype` is accepted too and passed on as `dtype`.
        """
        from ..default_model import resolve_model

        pretrained_model_name_or_path, left_out = resolve_model(pretrained_model_name_or_path)
        for component, value in left_out.items():
            kwargs.setdefault(component, value)
        kwargs.setdefault("use_safetensors", True)
        # weights may be stored in float16 to keep checkpoints small; compute in float32 unless asked otherwise
        if "torch_dtype" in kwargs:  # diffusers >= 0.40 deprecates the old name
            if "dtype" in kwargs:
                raise ValueError("pass `dtype` only (`torch_dtype` is its older name); got both")
            kwargs["dtype"] = kwargs.pop("torch_dtype")
        kwargs.setdefault("dtype", torch.float32)
        if os.path.isdir(str(pretrained_model_name_or_path)):
            verify_checksums(str(pretrained_model_name_or_path))
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def save_pretrained(self, save_directory, safe_serialization: bool = True, **kwargs):
        """Saves every component (safetensors) and a SHA-256 manifest of the weights and configs."""
        if not safe_serialization:
            raise ValueError("this project saves weights as safetensors only; safe_serialization must be True")
        if self.lora_adapters():
            raise ValueError(
                f"the transformer carries LoRA adapters {self.lora_adapters()}: call pipe.fuse_lora() to save them merged "
                "into the weights, or pipe.unload_lora_weights() to save the base model (the adapter folder itself is "
                "what `m6-fashion finetune --lora --save_adapter` writes)"
            )
        result = super().save_pretrained(save_directory, safe_serialization=True, **kwargs)
        write_hub_entry_point(str(save_directory))
        write_checksums(str(save_directory))
        return result

    @classmethod
    def _dict_from_json_file(cls, json_file):
        # A saved folder names its class as `[file, class]` for diffusers' generic loader (see
        # `write_hub_entry_point`); loading through this class needs neither that file nor trust_remote_code.
        config = super()._dict_from_json_file(json_file)
        if isinstance(config.get("_class_name"), (list, tuple)) and len(config["_class_name"]) == 2:
            config["_class_name"] = config["_class_name"][1]
        return config

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: Optional[str] = None,
        private: Optional[bool] = None,
        token: Optional[str] = None,
        create_pr: bool = False,
        safe_serialization: bool = True,
        variant: Optional[str] = None,
        subfolder: Optional[str] = None,
        revision: Optional[str] = None,
        model_card: Optional[str] = None,
    ):
        """Uploads the whole pipeline (safetensors) with its model card as README.md; diffusers' signature.

        As `diffusers.DiffusionPipeline.push_to_hub`: the repo is created if needed (`private`), the files are
        saved with `save_pretrained` (with its `checksums.sha256`) and committed in one commit (`commit_message`,
        `create_pr`; `subfolder` puts them under that folder of the repo). `variant="fp16"` (or `"bf16"`) saves
        the weights in that dtype with the variant in the file names (`diffusion_pytorch_model.fp16.safetensors`;
        load with `from_pretrained(repo, variant="fp16")`); the pipeline itself is left unchanged. Weights are
        safetensors only: `safe_serialization=False` is refused before anything is saved or sent. `revision` is
        the branch to commit to (or, with `create_pr=True`, to open the pull request against).

        The card is `model_card` if given, else the README.md of the folder the pipeline was loaded from, else a
        minimal card, built by `m6_fashion.hub.build_model_card`: Hub front matter via `ModelCardData`, and a
        weights paragraph (dtype, values, bytes per file) computed from the files being pushed. The shipped
        model (loaded from the shipped folder) gets its `model-index` results from `benchmarks/results` when
        the repository's results are at hand; other pipelines get none (weights changed in memory after loading
        the shipped model are not detected: pass your own `model_card`).

        Returns the `CommitInfo` of the commit (its `pr_url` with `create_pr=True`).
        """
        import copy
        import tempfile

        from huggingface_hub import CommitOperationAdd, HfApi

        from ..hub import build_model_card, shipped_eval_results, shipped_model_name

        if not safe_serialization:
            raise ValueError(
                "this project pushes weights as safetensors only (no pickled .bin files); "
                "safe_serialization must be True"
            )
        pipe = self
        dtype = _VARIANT_DTYPES.get(variant) if variant else None
        if dtype is not None and _module_dtypes(self) != {dtype}:
            pipe = copy.deepcopy(self).to(dtype)  # the variant's files hold `dtype` weights; self keeps its own
        name = shipped_model_name(str(getattr(self.config, "_name_or_path", "") or ""), self.decoder_hr is not None)
        explicit = model_card is not None
        with tempfile.TemporaryDirectory() as tmp:
            pipe.save_pretrained(tmp, variant=variant)  # refuses LoRA-carrying transformers before any request
            del pipe
            api = HfApi(token=token)
            repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
            card = build_model_card(
                model_card if explicit else _source_card(self), folder=tmp, variant=variant, repo_id=repo_id,
                model_name=name, eval_results=shipped_eval_results(name) if name else None, keep_model_index=explicit,
            )
            card.save(os.path.join(tmp, "README.md"))
            # one commit of exactly these files (create_commit rather than upload_folder: the weights, their
            # manifest and the card land together, and a pull request may target `revision`)
            operations = [
                CommitOperationAdd(path_in_repo=f"{subfolder.strip('/')}/{rel}" if subfolder else rel,
                                   path_or_fileobj=os.path.join(tmp, rel))
                for rel in _folder_files(tmp)
            ]
            return api.create_commit(
                repo_id=repo_id, operations=operations, revision=revision, create_pr=create_pr,
                commit_message=commit_message or f"Upload {type(self).__name__}",
            )

    # ------------------------------------------------------------------ LoRA (diffusers-style)
    def lora_adapters(self) -> List[str]:
        """Names of the LoRA adapters loaded into the transformer (empty without any)."""
        try:
            from peft import PeftModel
        except ImportError:  # no peft, no adapters
            return []
        if not isinstance(self.transformer, PeftModel):  # (older peft leaves a stale peft_config on unloaded models)
            return []
        return sorted(self.transformer.peft_config)

    def load_lora_weights(self, pretrained_model_name_or_path: str, adapter_name: str = "default", **kwargs):
        """Loads a LoRA adapter of the transformer and makes it the active one.

        `pretrained_model_name_or_path`: a folder or Hub repo holding `adapter_config.json` +
        `adapter_model.safetensors` (what `m6-fashion finetune --lora --save_adapter` writes), or a fine-tuned
        pipeline folder with such an adapter in `transformer_lora/`. `subfolder`, `revision` and `token` are
        passed to peft. Several adapters can be loaded under different names; `set_adapters(name)` switches,
        `fuse_lora()` merges the active one into the weights, `unload_lora_weights()` removes them all.
        Needs `peft` (`pip install 'm6-fashion[finetune]'`).
        """
        try:
            from peft import PeftModel
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("load_lora_weights needs peft: pip install 'm6-fashion[finetune]'") from e
        source = str(pretrained_model_name_or_path)
        if os.path.isdir(source) and "subfolder" not in kwargs and not os.path.isfile(os.path.join(source, "adapter_config.json")):
            if os.path.isfile(os.path.join(source, "transformer_lora", "adapter_config.json")):
                kwargs["subfolder"] = "transformer_lora"
            else:
                raise ValueError(f"no LoRA adapter in {source!r}: expected adapter_config.json there or in transformer_lora/")
        if adapter_name in self.lora_adapters():
            raise ValueError(f"an adapter named {adapter_name!r} is already loaded; pass another adapter_name "
                             f"(loaded: {self.lora_adapters()})")
        kwargs.setdefault("use_safetensors", True)
        if isinstance(self.transformer, PeftModel):
            self.transformer.load_adapter(source, adapter_name=adapter_name, **kwargs)
            self.transformer.set_adapter(adapter_name)
        else:
            model = PeftModel.from_pretrained(self.transformer, source, adapter_name=adapter_name, **kwargs)
            object.__setattr__(self, "transformer", model.eval())  # model_index.json keeps naming the base class

    def set_adapters(self, adapter_name: str) -> None:
        """Makes the loaded adapter `adapter_name` the active one."""
        if adapter_name not in self.lora_adapters():
            raise ValueError(f"no LoRA adapter named {adapter_name!r}; loaded: {self.lora_adapters() or 'none'}")
        self.transformer.set_adapter(adapter_name)

    def fuse_lora(self) -> None:
        """Merges the active LoRA adapter into the transformer's weights and drops the adapters."""
        if not self.lora_adapters():
            raise ValueError("no LoRA adapter is loaded; call load_lora_weights(...) first")
        object.__setattr__(self, "transformer", self.transformer.merge_and_unload().eval())

    def unload_lora_weights(self) -> None:
        """Removes every LoRA adapter: the transformer is the base model again (no-op without adapters)."""
        if self.lora_adapters():
            object.__setattr__(self, "transformer", self.transformer.unload().eval())

    # ------------------------------------------------------------------ geometry
    @property
    def sample_size(self) -> int:
        """Side of the square the image tokenizer reads (pixels)."""
        return self.image_tokenizer.config.sample_size

    @property
    def grid_size(self) -> int:
        return self.transformer.config.grid_size

    @property
    def cell(self) -> int:
        """Pixels per token cell on the `sample_size` canvas."""
        return self.sample_size // self.grid_size

    def canvas_sides(self) -> List[int]:
        """Sides of the square canvases the pipeline's decoders paint: `sample_size`, and `decoder_hr`'s if present."""
        sides = [self.sample_size]
        hr = getattr(self, "decoder_hr", None)
        if hr is not None:
            sides.append(int(hr.config.sample_size))
        return sides

    @property
    def default_size(self) -> Tuple[int, int]:
        """`(height, width)` made when none is given: the 3:4 portrait of the largest canvas with `decoder_hr`
        (192x256 for the shipped model), else the `sample_size` square."""
        side = max(self.canvas_sides())
        if side == self.sample_size:
            return side, side
        return side, _portrait_width(side, self.grid_size)

    def output_sizes(self) -> List[Tuple[int, int]]:
        """Every `(height, width)` this pipeline can make: centred crops of a canvas, at least half its side,
        aligned to whole token cells on both sides."""
        sizes = []
        for side in self.canvas_sides():
            cands = _crop_sides(side, self.grid_size)
            sizes += [(h, w) for h in cands for w in cands]
        return sorted(set(sizes))

    def output_canvas(self, height: Optional[int] = None, width: Optional[int] = None) -> "OutputCanvas":
        """The canvas and crop for an output of `height` x `width` pixels.

        Neither given: `default_size`. One given: the other keeps the default aspect ratio as closely as the
        canvas on which the given side is possible allows (`height=64` -> 48x64, `width=192` -> 192x256 with
        `decoder_hr`). Raises naming the accepted sizes when the model cannot make the size.
        """
        for name, v in (("height", height), ("width", width)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer))):
                raise TypeError(f"{name} must be an integer number of pixels; got {v!r}")
        dh, dw = self.default_size
        if height is None and width is None:
            height, width = dh, dw
        elif height is None or width is None:
            given, ratio = (height, dw / dh) if width is None else (width, dh / dw)
            for side in sorted(self.canvas_sides()):
                cands = _crop_sides(side, self.grid_size)
                if given in cands:
                    other = min(cands, key=lambda v: abs(v - given * ratio))
                    height, width = (given, other) if width is None else (other, given)
                    break
        height = None if height is None else int(height)
        width = None if width is None else int(width)
        for side in sorted(self.canvas_sides()):
            cands = _crop_sides(side, self.grid_size)
            if height in cands and width in cands:
                return OutputCanvas(side=side, grid=self.grid_size, height=height, width=width)
        asked = f"{width}x{height} (width x height)" if height is not None and width is not None else (
            f"height={height}" if width is None else f"width={width}")
        listed = "; ".join(
            f"{side}x{side} canvas{' (decoder_hr)' if side != self.sample_size else ''}: height and width each in "
            f"{_crop_sides(side, self.grid_size)}"
            for side in self.canvas_sides()
        )
        hint = "" if len(self.canvas_sides()) > 1 else " (this pipeline has no decoder_hr; load one that has it for larger sizes)"
        raise ValueError(f"this model cannot make a {asked} image; accepted: {listed}{hint}")

    def box_to_cells(self, box: Sequence[int], canvas: Optional["OutputCanvas"] = None) -> Tuple[int, int, int, int]:
        """Pixel box (left, top, right, bottom) on the output image -> grid box (top, left, height, width),
        rounded outwards. `canvas` defaults to the default output size."""
        return (canvas or self.output_canvas()).box_to_cells(box)

    # ------------------------------------------------------------------ validation
    def check_inputs(
        self,
        prompt,
        image,
        mask_image,
        style_image,
        image_box,
        reference_images,
        num_inference_steps,
        num_images_per_prompt,
        guidance_scale,
        output_type,
        callback_on_step_end_tensor_inputs,
        temperature=None,
        generator=None,
        refine_ratio=DEFAULT_REFINE_RATIO,
        height=None,
        width=None,
        callback_on_step_end=None,
        blend_pixels=True,
        context_dropout_steps=None,
    ):
        """Checks every argument before any image is encoded or any token generated; raises naming the argument.

        No argument is silently ignored: one that would have no effect in this combination (guidance without a
        prompt or reference patches, `refine_ratio` without style mixing, `blend_pixels=False` without pixels to
        paste back, an `image_box` that leaves nothing to generate, tensor names without a callback) is refused.
        """
        canvas = self.output_canvas(height, width)
        if prompt is not None and not isinstance(prompt, (str, list, tuple)):
            raise TypeError(f"prompt must be a string or a list of strings; got {type(prompt).__name__}")
        if isinstance(prompt, (list, tuple)):
            if len(prompt) == 0:
                raise ValueError("prompt is an empty list; pass at least one prompt (use '' for no text)")
            if not all(isinstance(p, str) for p in prompt):
                raise TypeError("every prompt in the list must be a string")
        num_inference_steps = _as_int(num_inference_steps)
        num_images_per_prompt = _as_int(num_images_per_prompt)
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or not (
            1 <= num_inference_steps <= MAX_INFERENCE_STEPS
        ):
            raise ValueError(f"num_inference_steps must be an integer in [1, {MAX_INFERENCE_STEPS}]; got {num_inference_steps!r}")
        if isinstance(num_images_per_prompt, bool) or not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be an integer >= 1; got {num_images_per_prompt!r}")
        n_prompts = len(prompt) if isinstance(prompt, (list, tuple)) else len(image) if isinstance(image, (list, tuple)) else 1
        if n_prompts * num_images_per_prompt > MAX_IMAGES_PER_CALL:
            raise ValueError(
                f"{n_prompts} prompt(s) x num_images_per_prompt={num_images_per_prompt} = {n_prompts * num_images_per_prompt} "
                f"images; at most {MAX_IMAGES_PER_CALL} per call (call again for more)"
            )
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) or not math.isfinite(guidance_scale) or not (
            1.0 <= guidance_scale <= MAX_GUIDANCE_SCALE
        ):
            raise ValueError(
                f"guidance_scale must be a finite number in [1, {MAX_GUIDANCE_SCALE:g}] (1.0 = no guidance); got {guidance_scale!r}"
            )
        texts = [prompt] if isinstance(prompt, str) else list(prompt or [])
        if guidance_scale > 1.0 and reference_images is None and not any(t.strip() for t in texts):
            raise ValueError(
                f"guidance_scale={guidance_scale:g} steers the image towards the prompt or the reference patches, and this call "
                "has neither (no prompt text, no reference_images), so it would change nothing; pass a prompt or "
                "reference_images, or leave guidance_scale at 1.0"
            )
        if temperature is not None:
            check_temperature(temperature, "temperature")
        if isinstance(refine_ratio, bool) or not isinstance(refine_ratio, (int, float)) or not 0.0 <= refine_ratio <= 1.0:
            raise ValueError(f"refine_ratio must be a number in [0, 1]; got {refine_ratio!r}")
        if style_image is None and refine_ratio != DEFAULT_REFINE_RATIO:
            raise ValueError(
                f"refine_ratio={refine_ratio!r} only acts in style mixing (image + style_image + mask_image: the share of the "
                "cells around the seam that are re-sampled); this call mixes no styles, so drop refine_ratio"
            )
        if not isinstance(blend_pixels, (bool, np.bool_)):
            raise TypeError(f"blend_pixels must be True or False; got {blend_pixels!r}")
        if not blend_pixels and (image is None or output_type == "tokens"):
            raise ValueError(
                "blend_pixels=False keeps the decoded pixels outside the edited region instead of pasting the pixels of image "
                "back; it needs an image to edit and decoded pixels (output_type 'pil', 'np' or 'pt'), and this call has "
                + ("no image" if image is None else "output_type='tokens'") + ", so drop blend_pixels"
            )
        if isinstance(generator, (list, tuple)):
            if len(generator) != 1 or not isinstance(generator[0], torch.Generator):
                raise TypeError(
                    "generator must be one torch.Generator (or a list holding exactly one); per-image generator lists "
                    f"are not supported; got a list of {len(generator)}"
                )
        elif generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator must be a torch.Generator, e.g. torch.Generator().manual_seed(0); got {type(generator).__name__}"
            )
        if output_type not in ("pil", "np", "pt", "tokens"):
            raise ValueError(f"output_type {output_type!r} is not supported; use 'pil', 'np', 'pt' or 'tokens'")
        if mask_image is not None and image is None:
            raise ValueError("mask_image needs an image to edit: pass image=...")
        if style_image is not None and (image is None or mask_image is None):
            raise ValueError("style mixing needs image (the base garment), style_image and mask_image (region taken from style_image)")
        if image_box is not None:
            if image is None:
                raise ValueError("image_box (outpainting) needs an image to place: pass image=...")
            if mask_image is not None:
                raise ValueError("pass either image_box (outpainting) or mask_image (inpainting), not both")
            if canvas.box_to_cells(image_box, "image_box") == canvas.box_to_cells((0, 0, canvas.width, canvas.height)):
                raise ValueError(
                    f"image_box {tuple(image_box)!r} covers the whole {canvas.width}x{canvas.height} (width x height) output once "
                    f"widened to whole {canvas.cell}-px token cells, so outpainting would generate nothing; leave at least one "
                    "token cell of the output outside the box (or use mask_image to regenerate part of the image)"
                )
        for name, value in (("image", image), ("mask_image", mask_image), ("style_image", style_image)):
            for i, item in enumerate(value if isinstance(value, (list, tuple)) else [value]):
                if value is not None and not isinstance(item, (PIL.Image.Image, np.ndarray, torch.Tensor)):
                    where = f"{name}[{i}]" if isinstance(value, (list, tuple)) else name
                    raise TypeError(f"{where} must be a PIL image, numpy array or tensor (or a list of them); got {type(item).__name__}")
        if image is not None and mask_image is None and image_box is None and reference_images is None:
            raise ValueError(
                "an image alone says nothing to edit: add mask_image (inpainting), image_box (outpainting), "
                "style_image + mask_image (style mixing) or reference_images (local editing)"
            )
        if isinstance(image, (list, tuple)) and len(image) == 0:
            raise ValueError("image is an empty list; pass at least one image")
        if image is not None and mask_image is not None:
            for im, m in zip(_as_list(image), _as_list(mask_image)):
                isz, msz = _size_of(im), _size_of(m)
                if isz is not None and msz is not None and isz != msz:
                    raise ValueError(f"mask_image size {msz} does not match image size {isz}; give a mask of the same size as the image")
        if reference_images is not None:
            if not isinstance(reference_images, (list, tuple)) or len(reference_images) == 0:
                raise ValueError("reference_images must be a non-empty list of (image, box) pairs")
            cells = 0
            for i, ref in enumerate(reference_images):
                if not isinstance(ref, (list, tuple)) or len(ref) != 2:
                    raise ValueError(f"reference_images[{i}] must be a pair (image, box) with box = (left, top, right, bottom) in pixels")
                if not isinstance(ref[0], (PIL.Image.Image, np.ndarray, torch.Tensor)):
                    raise TypeError(
                        f"reference_images[{i}][0] must be a PIL image, numpy array or tensor; got {type(ref[0]).__name__}"
                    )
                _, _, h, w = canvas.box_to_cells(ref[1], f"reference_images[{i}] box")
                cells += h * w + (1 if i else 0)
            limit = self.transformer.config.max_condition_tokens
            if cells > limit:  # checked before any patch is encoded
                raise ValueError(
                    f"the {len(reference_images)} reference patch(es) cover {cells} token cells (one separator between "
                    f"two patches counts); the model takes at most {limit}: use fewer or smaller boxes"
                )
        if context_dropout_steps is not None and (
            isinstance(context_dropout_steps, bool) or not isinstance(context_dropout_steps, (int, np.integer))
            or not 0 <= context_dropout_steps <= num_inference_steps
        ):
            raise ValueError(
                f"context_dropout_steps must be None (automatic) or a whole number in [0, num_inference_steps="
                f"{num_inference_steps!r}] (the first SMART passes that hide the kept tokens from the model); got {context_dropout_steps!r}"
            )
        if context_dropout_steps and not _text_guided_inpainting(prompt, image, mask_image, style_image):
            raise ValueError(
                f"context_dropout_steps={context_dropout_steps!r} only acts in text-guided inpainting (image + mask_image + a "
                "prompt, no style_image): it hides the kept tokens around the masked region from the model for the first "
                "passes so the region follows the text; this call is not one, so drop context_dropout_steps"
            )
        if callback_on_step_end is not None and not callable(callback_on_step_end):
            raise TypeError(f"callback_on_step_end must be callable, called as fn(pipe, step, timestep, tensors); got {type(callback_on_step_end).__name__}")
        if callback_on_step_end_tensor_inputs is not None and not all(k in self._callback_tensor_inputs for k in callback_on_step_end_tensor_inputs):
            raise ValueError(f"callback_on_step_end_tensor_inputs must be a subset of {self._callback_tensor_inputs}")
        if callback_on_step_end_tensor_inputs is not None and callback_on_step_end is None:
            raise ValueError(
                "callback_on_step_end_tensor_inputs names the tensors passed to callback_on_step_end, and no callback_on_step_end "
                "is given; pass the callback too, or drop callback_on_step_end_tensor_inputs"
            )

    # ------------------------------------------------------------------ encoding helpers
    def encode_prompt(self, prompts: List[str]) -> List[List[int]]:
        """Captions -> token id lists (no special tokens), truncated to `max_text_length` with a warning."""
        limit = self.transformer.config.max_text_length
        enc = self.tokenizer(prompts, add_special_tokens=False, return_offsets_mapping=True)
        ids = enc["input_ids"]
        unk = self.tokenizer.unk_token_id
        out = []
        for p, row, offsets in zip(prompts, ids, enc["offset_mapping"]):
            unknown = [p[a:b] for t, (a, b) in zip(row, offsets) if t == unk]
            if unknown and 2 * len(unknown) >= len(row):
                shown = ", ".join(repr(w[:30]) for w in unknown[:8]) + (" ..." if len(unknown) > 8 else "")
                logger.warning(
                    f"{len(unknown)} of the {len(row)} words of a prompt are unknown to the model's vocabulary and are "
                    f"ignored: {shown}. The model knows the English words of the training captions (article types, "
                    "colours, genders, seasons, usage; see tokenizer/tokenizer.json)"
                )
            if len(row) > limit:
                logger.warning(f"prompt {p!r} has {len(row)} tokens; truncated to the model's limit of {limit}")
                row = row[:limit]
            out.append(list(row))
        return out

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.LongTensor:
        """Pixels (B, 3, H, W) in [-1, 1] -> tokens (B, N, M)."""
        tokens = self.image_tokenizer.encode(images.to(self.device, self.image_tokenizer.dtype))
        return tokens.reshape(tokens.shape[0], -1, tokens.shape[-1])

    @torch.no_grad()
    def decode_tokens(self, tokens: torch.LongTensor, side: Optional[int] = None) -> torch.Tensor:
        """Tokens (B, N, M) or (B, h, w, M) -> images (B, 3, side, side) in [-1, 1].

        `side` picks the decoder: `sample_size` (default) or `decoder_hr`'s canvas.
        """
        g = self.grid_size
        if tokens.ndim == 3:
            tokens = tokens.reshape(tokens.shape[0], g, g, tokens.shape[-1])
        side = self.sample_size if side is None else side
        if side not in self.canvas_sides():
            raise ValueError(f"no decoder paints a {side}x{side} canvas; this pipeline has {self.canvas_sides()}")
        decoder = self.decoder if side == self.sample_size else self.decoder_hr
        latents = self.image_tokenizer.lookup(tokens.to(self.device))
        return decoder(latents.to(decoder.dtype)).sample.float().clamp(-1, 1)

    def _reference_patch(self, image: PipelineImageInput, box: Sequence[int], canvas: "OutputCanvas", name: str = "reference_images"):
        """Places a reference patch image into `box` on a white canvas, encodes it, returns (codes (n, M), positions (n,))."""
        s = self.sample_size
        top, left, h, w = canvas.box_to_cells(box, f"{name} box")
        c = self.cell
        pil = image if isinstance(image, PIL.Image.Image) else postprocess(preprocess(image, s, name), "pil")[0]
        from ..image_processing import to_rgb

        sheet = PIL.Image.new("RGB", (s, s), (255, 255, 255))  # the tokenizer reads the sample_size square
        sheet.paste(to_rgb(pil, name).resize((w * c, h * c), PIL.Image.BICUBIC), (left * c, top * c))
        tokens = self.encode_images(preprocess(sheet, s))[0]  # (N, M)
        rows = torch.arange(top, top + h)
        cols = torch.arange(left, left + w)
        positions = (rows[:, None] * self.grid_size + cols[None, :]).reshape(-1).to(tokens.device)
        return tokens[positions].cpu(), positions.cpu()

    def _cell_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """Pixel mask (B, 1, S, S) in {0,1} -> (B, N) bool: a cell is editable if any of its pixels is masked."""
        g = self.grid_size
        return (F.adaptive_max_pool2d(mask, (g, g)) > 0.5).reshape(mask.shape[0], -1)

    # ------------------------------------------------------------------ sampling
    def _prepare(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, Any]:
        """Prepares one model input set for the SMART passes.

        With `prefix_attention="isolated"` the condition + text prefix never attends to the target, so its
        keys/values are computed once here and reused by every pass, which then only runs the N target positions.
        """
        if self.transformer.config.prefix_attention == "isolated":
            prefix, target = split_prefix_and_target(inputs, self.transformer.config.num_image_tokens)
            return {"inputs": target, "cache": self.transformer.encode_prefix(**prefix)}
        return {"inputs": inputs, "cache": None}

    def _forward(self, prepared: Dict[str, Any], tokens: torch.Tensor) -> torch.Tensor:
        inputs = prepared["inputs"]
        n = tokens.shape[1]
        inputs["image_codes"][:, -n:] = tokens
        if prepared["cache"] is None:
            return self.transformer(**inputs).logits
        return self.transformer(**inputs, past_key_values=prepared["cache"], use_cache=False).logits

    def _logits(self, cond: Dict[str, Any], uncond: Optional[Dict[str, Any]], tokens: torch.Tensor, guidance_scale: float):
        logits = self._forward(cond, tokens)
        if uncond is not None and guidance_scale > 1.0:
            logits_u = self._forward(uncond, tokens)
            logits = logits_u + guidance_scale * (logits - logits_u)
        return logits

    @torch.no_grad()
    def __call__(
        self,
        prompt: Union[str, List[str], None] = None,
        image: Union[PipelineImageInput, List[PipelineImageInput], None] = None,
        mask_image: Union[PipelineImageInput, List[PipelineImageInput], None] = None,
        style_image: Union[PipelineImageInput, List[PipelineImageInput], None] = None,
        image_box: Optional[Box] = None,
        reference_images: Optional[List[Tuple[PipelineImageInput, Box]]] = None,
        height: Optional[int] = None,
        width: Optional[int] = None,
        num_inference_steps: int = 10,
        num_images_per_prompt: int = 1,
        guidance_scale: float = 1.0,
        temperature: Optional[float] = None,
        generator: Optional[torch.Generator] = None,
        output_type: str = "pil",
        return_dict: bool = True,
        blend_pixels: bool = True,
        refine_ratio: float = DEFAULT_REFINE_RATIO,
        context_dropout_steps: Optional[int] = None,
        callback_on_step_end: Optional[Callable[["M6FashionPipeline", int, int, Dict[str, Any]], Dict[str, Any]]] = None,
        callback_on_step_end_tensor_inputs: Optional[List[str]] = None,
    ):
        r"""Generates or edits garment images.

        Args:
            prompt: caption(s); `None` or `""` = no text. Prompts longer than the model's text limit are
                truncated with a warning.
            image: the image to edit (inpainting, outpainting, style mixing, or the canvas around reference
                patches); one image for all prompts or one per prompt.
            mask_image: white where `image` is regenerated (inpainting) or taken from `style_image` (mixing);
                same size as `image`.
            style_image: second garment for style mixing: its tokens fill the mask region, then SMART refines
                the seam (`refine_ratio` of the tokens around it are re-sampled).
            image_box: outpainting: `image` is resized into this pixel box of the canvas and everything outside
                it is generated.
            reference_images: local editing: a list of `(patch_image, box)`; each patch is resized into its box
                and given to the model as a visual condition at that place. Several pairs = several conditions.
            height, width: output size in pixels (default `pipe.default_size`: 256 x 192 with `decoder_hr`,
                else `sample_size` square); one alone keeps the default aspect ratio. `pipe.output_sizes()` lists
                the accepted sizes; others raise. Boxes are given on this output.
            num_inference_steps: T, SMART passes (default 10).
            num_images_per_prompt: images per prompt.
            guidance_scale: classifier-free guidance scale (1.0 = off); > 1 runs an unconditional pass too and
                needs a prompt or reference patches to steer towards (refused without either).
            temperature: overrides the scheduler's sampling temperature for this call.
            generator: `torch.Generator` making the call reproducible.
            output_type: `"pil"`, `"np"`, `"pt"` or `"tokens"` (skip decoding).
            refine_ratio: style mixing only: the share of the cells around the seam that SMART re-samples
                (default 0.25); any other value without `style_image` is refused.
            blend_pixels: when editing an image (inpainting, outpainting, mixing, patches inside `image`), paste its
                pixels back outside the edited region (default); `False` keeps the decoded pixels there. Refused without
                an image or with `output_type="tokens"`, where it would change nothing.
            context_dropout_steps: text-guided inpainting only (image + mask_image + prompt, no style_image): for the
                first this many SMART passes the model is shown the kept (non-editable) tokens as masked, so the masked
                region is drawn from the text (and any prefix) instead of copying the garment around it; later passes
                show the context again so the region blends in. The kept tokens are never changed. `None` (default):
                `round(0.8 * num_inference_steps)` for text-guided inpainting (8 of 10 passes: the asked colour in 70%
                of `bench_words_and_masks.py inpainting` cases against 2% without), 0 otherwise; 0 turns it off (the
                region then follows the garment around it); other modes refuse a non-zero value.
            callback_on_step_end: called after every pass as `fn(pipe, step, timestep, {"tokens": ...})`;
                it may return a dict replacing `tokens`.

        Returns:
            [`M6FashionPipelineOutput`] with `images` and `tokens (B, h, w, M)`, or a tuple `(images, tokens)`.
        """
        self.check_inputs(
            prompt, image, mask_image, style_image, image_box, reference_images, num_inference_steps,
            num_images_per_prompt, guidance_scale, output_type, callback_on_step_end_tensor_inputs,
            temperature=temperature, generator=generator, refine_ratio=refine_ratio, height=height, width=width,
            callback_on_step_end=callback_on_step_end, blend_pixels=blend_pixels, context_dropout_steps=context_dropout_steps,
        )
        num_inference_steps, num_images_per_prompt = _as_int(num_inference_steps), _as_int(num_images_per_prompt)
        if context_dropout_steps is None:
            text_guided = _text_guided_inpainting(prompt, image, mask_image, style_image)
            context_dropout_steps = round(CONTEXT_DROPOUT_SHARE * num_inference_steps) if text_guided else 0
        canvas = self.output_canvas(height, width)
        if isinstance(generator, (list, tuple)):
            generator = generator[0]
        device = self.device
        cfg = self.transformer.config
        g, n, k = cfg.grid_size, cfg.num_image_tokens, cfg.codebook_size
        s = self.sample_size

        # ---- batch
        if prompt is None:
            prompts = [""] * max(1, len(_as_list(image)) if isinstance(image, (list, tuple)) else 1)
        else:
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        prompts = [p for p in prompts for _ in range(num_images_per_prompt)]
        b = len(prompts)

        # ---- initial tokens and editable cells
        # pixels for blending live on the decoded canvas (side D); the tokenizer reads the sample_size square
        d = canvas.side
        tokens = torch.full((b, n, cfg.num_groups), k, dtype=torch.long, device=device)
        editable = torch.ones(b, n, dtype=torch.bool, device=device)
        base_pixels, pixel_mask = None, None
        n_base = len(prompts) // num_images_per_prompt
        if image is not None:
            if image_box is not None:
                top, left, h, w = canvas.box_to_cells(image_box, "image_box")
                c = canvas.cell
                canvases = []
                for im in _expand(image, n_base, "image"):
                    pil = im if isinstance(im, PIL.Image.Image) else postprocess(preprocess(im, d, "image"), "pil")[0]
                    sheet = PIL.Image.new("RGB", (d, d), (255, 255, 255))
                    sheet.paste(fit_onto(pil, w * c, h * c), (left * c, top * c))  # aspect kept, on white
                    canvases.append(sheet)
                base_pixels = preprocess(canvases, d)
                token_pixels = preprocess(canvases, s)
                pixel_mask = canvas.cells_mask([(top, left, h, w)], 0.0, len(canvases))
            else:
                images = _expand(image, n_base, "image")
                base_pixels = preprocess(images, d)
                token_pixels = base_pixels if d == s else preprocess(images, s)
                if mask_image is not None:
                    masks = _expand(mask_image, base_pixels.shape[0], "mask_image")
                    pixel_mask = torch.stack([preprocess_mask(m, d, "mask_image") for m in masks])
                    if not pixel_mask.flatten(1).amax(1).all():
                        raise ValueError(
                            "mask_image selects no pixel (all black after thresholding at 0.5): white (>= 128, or >= 0.5 "
                            "for float masks) marks the region to regenerate"
                        )
                else:
                    # reference patches inside an image without a mask: their boxes are the region to edit
                    boxes = [canvas.box_to_cells(box) for _, box in reference_images or []]
                    pixel_mask = canvas.cells_mask(boxes, 1.0, base_pixels.shape[0])
            base_pixels = base_pixels.repeat_interleave(num_images_per_prompt, 0)
            pixel_mask = pixel_mask.repeat_interleave(num_images_per_prompt, 0)
            if style_image is not None:  # read before anything is encoded: a bad style_image fails early
                styles = _expand(style_image, n_base, "style_image")
                style_pixels = preprocess(styles, d, "style_image").repeat_interleave(num_images_per_prompt, 0)
                style_token_pixels = style_pixels if d == s else preprocess(styles, s, "style_image").repeat_interleave(num_images_per_prompt, 0)
            base_tokens = self.encode_images(token_pixels.repeat_interleave(num_images_per_prompt, 0))
            editable = self._cell_mask(pixel_mask).to(device)
            if style_image is not None:
                style_tokens = self.encode_images(style_token_pixels)
                base_tokens = torch.where(editable[..., None], style_tokens, base_tokens)
                base_pixels = torch.where(pixel_mask.bool(), style_pixels, base_pixels)
                editable = self._seam(editable, refine_ratio, generator)
                pixel_mask = F.interpolate(editable.float().reshape(b, 1, g, g), size=(d, d), mode="nearest").cpu()
            tokens = torch.where(editable[..., None], torch.full_like(base_tokens, k), base_tokens)

        # ---- conditions
        conditions = None
        if reference_images is not None:
            patches = [self._reference_patch(im, box, canvas, f"reference_images[{i}]") for i, (im, box) in enumerate(reference_images)]
            conditions = [patches for _ in range(b)]
            if image is None:
                tokens = torch.full((b, n, cfg.num_groups), k, dtype=torch.long, device=device)

        text_ids = self.encode_prompt(prompts)
        inputs = {key: v.to(device) for key, v in build_model_inputs(cfg, text_ids, tokens.cpu(), conditions).items()}
        cond = self._prepare(inputs)
        uncond = None
        if guidance_scale > 1.0:
            uncond_inputs = build_model_inputs(cfg, [[] for _ in range(b)], tokens.cpu(), None)
            uncond = self._prepare({key: v.to(device) for key, v in uncond_inputs.items()})

        # ---- SMART loop
        self.scheduler.set_timesteps(num_inference_steps, device=device, temperature=temperature)
        with self.progress_bar(total=num_inference_steps) as progress_bar:
            for i, t in enumerate(self.scheduler.timesteps):
                if (tokens == k).any():  # a pass with no masked cell left (few editable cells) runs no model
                    # context dropout: the first passes see the kept tokens as MASK (the sampler still gets the true ones)
                    seen = torch.where(editable[..., None], tokens, torch.full_like(tokens, k)) if i < context_dropout_steps else tokens
                    logits = self._logits(cond, uncond, seen, guidance_scale)
                    tokens = self.scheduler.step(logits, t, tokens, editable=editable, generator=generator).prev_sample
                if callback_on_step_end is not None:  # once per step, as in diffusers, skipped passes included
                    wanted = self._callback_tensor_inputs if callback_on_step_end_tensor_inputs is None else callback_on_step_end_tensor_inputs
                    tensors = {"tokens": tokens} if "tokens" in wanted else {}
                    cb = callback_on_step_end(self, i, int(t), tensors)
                    if cb is not None and not isinstance(cb, dict):
                        raise TypeError(f"callback_on_step_end must return a dict (or None); it returned {type(cb).__name__}")
                    new = (cb or {}).get("tokens", tokens)
                    if not isinstance(new, torch.Tensor) or new.shape != tokens.shape:
                        raise ValueError(
                            f"callback_on_step_end returned tokens of shape {tuple(getattr(new, 'shape', ()))}; "
                            f"expected a tensor of shape {tuple(tokens.shape)}"
                        )
                    tokens = new
                progress_bar.update()

        grid_tokens = tokens.reshape(b, g, g, cfg.num_groups)
        if output_type == "tokens":
            images = None
        else:
            pixels = self.decode_tokens(tokens, side=d).cpu()
            if base_pixels is not None and blend_pixels:
                pixels = torch.where(pixel_mask.bool(), pixels, base_pixels.float())
            images = postprocess(canvas.crop(pixels), output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, grid_tokens)
        return M6FashionPipelineOutput(images=images, tokens=grid_tokens)

    def _seam(self, region: torch.Tensor, refine_ratio: float, generator: Optional[torch.Generator]) -> torch.Tensor:
        """Cells on both sides of the border of `region` (B, N): the part SMART refines after style mixing."""
        g = self.grid_size
        r = region.float().reshape(-1, 1, g, g)
        grown = F.max_pool2d(r, 3, stride=1, padding=1)
        shrunk = -F.max_pool2d(-r, 3, stride=1, padding=1)
        seam = (grown - shrunk) > 0.5
        if refine_ratio > 0:
            extra = torch.rand(r.shape, generator=generator, device=generator.device if generator is not None else r.device).to(r.device) < refine_ratio
            seam = seam | (extra & (grown > 0.5))
        return seam.reshape(region.shape[0], -1)


def _text_guided_inpainting(prompt, image, mask_image, style_image) -> bool:
    """An image, a mask and some prompt text, no style image: the calls `context_dropout_steps` acts in."""
    texts = [prompt] if isinstance(prompt, str) else list(prompt or [])
    return image is not None and mask_image is not None and style_image is None and any(t.strip() for t in texts)


_VARIANT_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def _module_dtypes(pipe) -> set:
    return {p.dtype for m in pipe.components.values() if isinstance(m, torch.nn.Module) for p in m.parameters()}


def _folder_files(folder: str) -> List[str]:
    """Every file under `folder`, as sorted relative POSIX paths."""
    return sorted(
        os.path.relpath(os.path.join(root, f), folder).replace(os.sep, "/") for root, _, files in os.walk(folder) for f in files
    )


def _source_card(pipe) -> str:
    """README.md of the folder the pipeline was loaded from, or ""."""
    source = os.path.join(str(getattr(pipe.config, "_name_or_path", "") or ""), "README.md")
    return open(source, encoding="utf-8").read() if os.path.isfile(source) else ""


def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _as_int(value):
    """numpy integers as Python ints (so `np.int64(10)` steps are accepted); anything else unchanged for the checks."""
    return int(value) if isinstance(value, np.integer) else value


def _size_of(im) -> Optional[Tuple[int, int]]:
    if isinstance(im, PIL.Image.Image):
        return im.size
    if isinstance(im, np.ndarray) and im.ndim >= 2:
        return (im.shape[1], im.shape[0])
    if isinstance(im, torch.Tensor) and im.ndim >= 2:
        return (im.shape[-1], im.shape[-2])
    return None


def _expand(x, batch: int, name: str) -> list:
    items = _as_list(x)
    if isinstance(x, torch.Tensor) and x.ndim == 4:
        items = list(x)
    if len(items) == 1:
        return items * batch
    if len(items) != batch:
        raise ValueError(f"{name} has {len(items)} entries but there are {batch} prompts; give one, or one per prompt")
    return items


def check_components(image_tokenizer, transformer, scheduler, decoder=None, decoder_hr=None) -> None:
    """The invariants the components must share, checked once when a pipeline is assembled.

    The transformer's ``codebook_size`` K is the image MASK code: the scheduler's ``mask_token_id`` must
    equal it, and the image tokenizer must produce ``num_groups`` codes in ``[0, K)`` on the transformer's grid.
    Both decoders read the tokenizer's latents and paint their ``sample_size`` square from the token grid.
    """
    if image_tokenizer is None or transformer is None or scheduler is None:
        return  # partial pipelines (DiffusionPipeline allows None components) are checked when complete
    t, q, sc = transformer.config, image_tokenizer.config, scheduler.config
    problems = []
    latent = getattr(q, "latent_channels", None)
    for name, dec in (("decoder", decoder), ("decoder_hr", decoder_hr)):
        if dec is None or not hasattr(dec, "config"):
            continue
        if latent is not None and dec.config.latent_channels != latent:
            problems.append(f"{name} reads latent_channels={dec.config.latent_channels} but the image tokenizer gives {latent}")
        painted = t.grid_size * getattr(dec, "upsample_factor", 1)
        if dec.config.sample_size != painted:
            problems.append(f"{name} sample_size={dec.config.sample_size} but it paints {painted} px from the {t.grid_size}x{t.grid_size} grid")
    if decoder_hr is not None and decoder is not None and hasattr(decoder_hr, "config") and decoder_hr.config.sample_size <= decoder.config.sample_size:
        problems.append(f"decoder_hr paints {decoder_hr.config.sample_size} px, not more than the decoder's {decoder.config.sample_size}")
    if sc.mask_token_id != t.codebook_size:
        problems.append(f"scheduler mask_token_id={sc.mask_token_id} but the transformer's MASK code is codebook_size={t.codebook_size}")
    if getattr(q, "codebook_size", t.codebook_size) != t.codebook_size:
        problems.append(f"image tokenizer codebook_size={q.codebook_size} but transformer codebook_size={t.codebook_size}")
    groups = getattr(image_tokenizer, "num_token_groups", t.num_groups)
    if groups != t.num_groups:
        problems.append(f"image tokenizer gives {groups} codes per token but transformer num_groups={t.num_groups}")
    grid = getattr(image_tokenizer, "grid_size", None)
    if grid is not None and grid != t.grid_size:
        problems.append(f"image tokenizer grid {grid}x{grid} but transformer grid_size={t.grid_size}")
    if problems:
        raise ValueError("the pipeline's components do not fit together: " + "; ".join(problems))


CHECKSUM_FILE = "checksums.sha256"
# weights, configs and the generic loader's entry point; model cards (README.md) may be edited freely
_CHECKED_SUFFIXES = (".safetensors", ".json", ".py")
HUB_ENTRY_FILE = "m6_fashion_pipeline.py"  # a copy of m6_fashion/pipelines/hub_pipeline.py


def write_hub_entry_point(folder: str) -> None:
    """Makes a saved pipeline folder loadable by ``diffusers.DiffusionPipeline.from_pretrained(folder,
    trust_remote_code=True)``: copies ``hub_pipeline.py`` in as ``m6_fashion_pipeline.py`` and sets
    ``model_index.json``'s ``_class_name`` to ``["m6_fashion_pipeline", "M6FashionPipeline"]``."""
    import json
    import shutil

    from . import hub_pipeline

    shutil.copyfile(hub_pipeline.__file__, os.path.join(folder, HUB_ENTRY_FILE))
    index_path = os.path.join(folder, "model_index.json")
    with open(index_path, encoding="utf-8") as f:
        index = json.load(f)
    index["_class_name"] = [HUB_ENTRY_FILE[: -len(".py")], M6FashionPipeline.__name__]
    with open(index_path, "w", encoding="utf-8") as f:
        f.write(json.dumps(index, indent=2, sort_keys=True) + "\n")


def _checked_files(folder: str) -> List[str]:
    out = []
    for root, _, files in os.walk(folder):
        for f in files:
            if f.endswith(_CHECKED_SUFFIXES):
                out.append(os.path.relpath(os.path.join(root, f), folder).replace(os.sep, "/"))
    return sorted(out)


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_checksums(folder: str) -> str:
    """Writes ``checksums.sha256`` (``sha256sum`` format) for the weights and configs of a saved pipeline."""
    path = os.path.join(folder, CHECKSUM_FILE)
    lines = [f"{_sha256(os.path.join(folder, rel))}  {rel}" for rel in _checked_files(folder)]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def verify_checksums(folder: str) -> None:
    """Checks a local pipeline folder against its ``checksums.sha256`` (when present) before anything loads.

    Raises ``ValueError`` naming each file that is missing or whose content changed (a truncated download,
    a bit flip, an edited config), so a corrupt model is refused instead of generating garbage.
    """
    path = os.path.join(folder, CHECKSUM_FILE)
    if not os.path.isfile(path):
        return
    problems = []
    for n, line in enumerate(open(path, encoding="utf-8").read().splitlines(), 1):
        if not line.strip():
            continue
        digest, _, rel = line.partition("  ")
        file = os.path.join(folder, rel)
        if not rel or len(digest) != 64:
            problems.append(f"{CHECKSUM_FILE} line {n} is malformed")
        elif not os.path.isfile(file):
            problems.append(f"{rel} is missing")
        elif _sha256(file) != digest:
            problems.append(f"{rel} does not match its SHA-256 (corrupt, truncated or edited)")
    if problems:
        raise ValueError(
            f"the pipeline folder {folder!r} fails its checksum manifest: " + "; ".join(problems)
            + f". Re-download or re-save the model (delete {CHECKSUM_FILE} only if you edited it on purpose)."
        )
