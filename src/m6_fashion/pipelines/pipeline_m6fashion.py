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

from m6_fashion_core import canvas as core_canvas
from m6_fashion_core import image as core_image
from m6_fashion_core import outpainting as core_outpainting
from m6_fashion_core import validation

# The Hub card template lives in m6_fashion.hub (shared with `m6-fashion finetune`); these names stay importable here.
from ..hub import HUB_METADATA, with_hub_metadata  # noqa: F401
from ..image_processing import PipelineImageInput, postprocess, preprocess, preprocess_mask
from ..models.pq_tokenizer import PQTokenizer
from ..models.sequence_layout import build_model_inputs, split_prefix_and_target
from ..models.style_decoder import StyleDecoder
from ..models.transformer_m6fashion import M6FashionTransformer
from ..schedulers.scheduling_smart import SMARTScheduler

# a child of diffusers' library logger: `diffusers.utils.logging.set_verbosity_error()` silences it, as it silences
# diffusers' own pipelines
logger = diffusers_logging.get_logger("diffusers.pipelines.m6_fashion")

# the limits and defaults of a call (m6_fashion_core.validation, shared with the runtime), under their names here
CONTEXT_DROPOUT_SHARE = validation.CONTEXT_DROPOUT_SHARE
MAX_IMAGES_PER_CALL = validation.MAX_IMAGES_PER_CALL
MAX_GUIDANCE_SCALE = validation.MAX_GUIDANCE_SCALE
DEFAULT_REFINE_RATIO = validation.DEFAULT_REFINE_RATIO
DEFAULT_GUIDANCE_MIN_P = validation.DEFAULT_GUIDANCE_MIN_P
IMAGE_TYPES = (PIL.Image.Image, np.ndarray, torch.Tensor)  # what `image`, `mask_image`, `style_image` and patches may be
IMAGE_KINDS = "a PIL image, numpy array or tensor"
OUTPUT_TYPES = ("pil", "np", "pt", "tokens")
COMPONENT_NAMES = ("image_tokenizer", "decoder", "transformer", "tokenizer", "scheduler", "decoder_hr")

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


class OutputCanvas(core_canvas.OutputCanvas):
    """Where an output image sits on the canvas the decoder paints (`m6_fashion_core.canvas.OutputCanvas`), with
    masks as tensors.

    The decoder paints `canvas_shape` pixels (`side` x `side`, `grid` x `grid` token cells, for a square model;
    `grid_shape` cells for a non-square one); the output is the centred `height` x `width` crop (`crop` slices
    tensors as arrays). Boxes are pixel boxes on the output.
    `OutputCanvas.for_size(sides, grid, height, width, holder="pipeline")` picks the canvas for a size.
    """

    def cells_mask(self, cells: Sequence[Tuple[int, int, int, int]], value: float, batch: int) -> torch.Tensor:
        """(batch, 1, *canvas_shape) filled with `1 - value`, with `value` on the given grid boxes."""
        return torch.from_numpy(super().cells_mask(cells, value, batch)).to(torch.get_default_dtype())


class WideOutputCanvas(OutputCanvas, core_outpainting.WideCanvas):
    """An outpainting output larger than the decoder's square (`m6_fashion_core.outpainting.WideCanvas`): `rows` x
    `cols` token cells generated window by window and decoded whole; masks as tensors `(batch, 1, height, width)`."""


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
        check_components(image_tokenizer, transformer, scheduler, decoder=decoder, decoder_hr=decoder_hr, tokenizer=tokenizer)
        self.register_modules(
            image_tokenizer=image_tokenizer, decoder=decoder, transformer=transformer, tokenizer=tokenizer, scheduler=scheduler,
            decoder_hr=decoder_hr,
        )

    def __setattr__(self, name: str, value: Any):
        # replacing a component (`pipe.scheduler = SMARTScheduler(...)`) assembles a new pipeline: the new set of
        # components is checked as `__init__` checks it, before the replacement takes effect
        if name in COMPONENT_NAMES and name in self.__dict__:
            parts = {key: self.__dict__.get(key) for key in COMPONENT_NAMES}
            check_components(**{**parts, name: value})
        super().__setattr__(name, value)

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
    def _dict_from_json_file(cls, json_file, *args, **kwargs):
        # A saved folder names its class as `[file, class]` for diffusers' generic loader (see
        # `write_hub_entry_point`); loading through this class needs neither that file nor trust_remote_code.
        # (*args, **kwargs: diffusers 0.40-0.41 also pass `dduf_entries`)
        config = super()._dict_from_json_file(json_file, *args, **kwargs)
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
        model (loaded from the shipped folder) gets its `model-index` results from the folder's `eval_results.json`;
        other pipelines get none (weights changed in memory after loading
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
        """Longest side of the canvas the image tokenizer reads (pixels; the side of the square for square models)."""
        return self.image_tokenizer.config.sample_size

    @property
    def grid_size(self) -> int:
        """Longest side of the token grid (the side of a square grid)."""
        return self.transformer.config.grid_size

    @property
    def grid_shape(self) -> Tuple[int, int]:
        """`(rows, cols)` of the token grid (`(grid_size, grid_size)` for a square model; 16 x 12 for 3:4)."""
        rows, cols = self.transformer.config.grid_shape
        return int(rows), int(cols)

    @property
    def sample_shape(self) -> Tuple[int, int]:
        """`(height, width)` in pixels of the canvas the image tokenizer reads: `grid_shape * cell`."""
        rows, cols = self.grid_shape
        return rows * self.cell, cols * self.cell

    @property
    def cell(self) -> int:
        """Pixels per token cell on the `sample_size` canvas."""
        return self.sample_size // self.grid_size

    def canvas_sides(self) -> List[int]:
        """Longest sides of the canvases the pipeline's decoders paint (`grid_shape` cells each): `sample_size`, and
        `decoder_hr`'s if present."""
        sides = [self.sample_size]
        hr = getattr(self, "decoder_hr", None)
        if hr is not None:
            sides.append(int(hr.config.sample_size))
        return sides

    @property
    def default_size(self) -> Tuple[int, int]:
        """`(height, width)` made when none is given: the 3:4 portrait of the largest canvas with `decoder_hr`
        (192x256 for the shipped model), else the `sample_size` square; a non-square model: its whole largest canvas."""
        return core_canvas.default_size(self.canvas_sides(), self.grid_shape)

    def output_sizes(self) -> List[Tuple[int, int]]:
        """Every `(height, width)` this pipeline can make: centred crops of a canvas, at least half its side,
        aligned to whole token cells on both sides."""
        return core_canvas.output_sizes(self.canvas_sides(), self.grid_shape)

    def output_canvas(self, height: Optional[int] = None, width: Optional[int] = None, outpainting: bool = False) -> "OutputCanvas":
        """The canvas and crop for an output of `height` x `width` pixels.

        Neither given: `default_size`. One given: the other keeps the default aspect ratio as closely as the
        canvas on which the given side is possible allows (`height=64` -> 48x64, `width=192` -> 192x256 with
        `decoder_hr`). Raises naming the accepted sizes when the model cannot make the size.
        `outpainting=True` (an `image` with an `image_box`) also accepts sizes larger than the largest canvas and
        returns a `WideOutputCanvas` for them (see `m6_fashion_core.outpainting.wide_canvas`).
        """
        sides = self.canvas_sides()
        if outpainting:
            wide = core_outpainting.wide_canvas(sides, self.grid_shape, height, width)
            if wide is not None:
                return WideOutputCanvas(side=wide.side, grid=wide.grid, height=wide.height, width=wide.width,
                                        grid_rows=wide.grid_rows, grid_cols=wide.grid_cols)
        try:
            return OutputCanvas.for_size(sides, self.grid_shape, height, width, holder="pipeline")
        except ValueError as error:
            if not outpainting:
                raise
            raise ValueError(f"{error}; {core_outpainting.wide_sizes_hint(sides, self.grid_shape)}") from None

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
        negative_prompt=None,
        guidance_min_p=DEFAULT_GUIDANCE_MIN_P,
        negative_guidance_scale=None,
    ):
        """Checks every argument before any image is encoded or any token generated; raises naming the argument.

        `guidance_scale` `None` is the task's default (`validation.default_guidance_scale`).
        No argument is silently ignored: one that would have no effect in this combination (guidance without a
        prompt or reference patches, a negative prompt or `guidance_min_p` without guidance, `negative_guidance_scale` without a
        negative prompt, `refine_ratio` without style mixing,
        `blend_pixels=False` without pixels to paste back, an `image_box` that leaves nothing to generate, tensor
        names without a callback) is refused.
        """
        canvas = self.output_canvas(height, width, outpainting=image is not None and image_box is not None)
        guidance_scale = validation.default_guidance_scale(guidance_scale, prompt, image, reference_images)
        steps, _, _, _, _ = validation.check_sampling_arguments(
            prompt, image, style_image, reference_images, num_inference_steps, num_images_per_prompt, guidance_scale,
            temperature, refine_ratio,
        )
        validation.check_negative_prompt(negative_prompt, prompt, image, guidance_scale)
        validation.check_negative_guidance_scale(negative_guidance_scale, negative_prompt)
        validation.check_guidance_min_p(guidance_min_p, guidance_scale)
        validation.check_output_type(output_type, OUTPUT_TYPES)
        validation.check_blend_pixels(blend_pixels, image, output_type, OUTPUT_TYPES)
        _check_generator(generator)
        validation.check_images(image, mask_image, style_image, image_box, reference_images, IMAGE_TYPES, IMAGE_KINDS)
        validation.check_boxes(
            canvas, image_box, reference_images, self.transformer.config.max_condition_tokens, IMAGE_TYPES, IMAGE_KINDS
        )
        validation.context_dropout_steps(context_dropout_steps, steps, prompt, image, mask_image, style_image)
        self._check_callback(callback_on_step_end, callback_on_step_end_tensor_inputs)

    def _check_callback(self, callback_on_step_end, callback_on_step_end_tensor_inputs) -> None:
        """A callable callback; tensor names from `_callback_tensor_inputs`, and only with a callback to receive them."""
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
        """Tokens (B, N, M) (the model's `grid_shape`) or (B, h, w, M) -> images (B, 3, h * cell, w * cell) in [-1, 1]
        (`side` x `side` for a square grid).

        `side` picks the decoder by the longest side of its canvas: `sample_size` (default) or `decoder_hr`'s; the
        decoders are convolutional, so a wide outpainting grid (more cells than the model's grid) decodes whole.
        """
        if tokens.ndim == 3:
            tokens = tokens.reshape(tokens.shape[0], *self.grid_shape, tokens.shape[-1])
        side = self.sample_size if side is None else side
        if side not in self.canvas_sides():
            raise ValueError(f"no decoder paints a {side}x{side} canvas; this pipeline has {self.canvas_sides()}")
        decoder = self.decoder if side == self.sample_size else self.decoder_hr
        latents = self.image_tokenizer.lookup(tokens.to(self.device))
        return decoder(latents.to(decoder.dtype)).sample.float().clamp(-1, 1)

    def _reference_patch(self, image: PipelineImageInput, box: Sequence[int], canvas: "OutputCanvas", name: str = "reference_images"):
        """Places a reference patch image into `box` on a white canvas, encodes it, returns (codes (n, M), positions (n,))."""
        s = self.sample_shape
        top, left, h, w = canvas.box_to_cells(box, f"{name} box")
        c = self.cell
        pil = image if isinstance(image, PIL.Image.Image) else postprocess(preprocess(image, s, name), "pil")[0]
        from ..image_processing import to_rgb

        sheet = PIL.Image.new("RGB", (s[1], s[0]), (255, 255, 255))  # the tokenizer reads the sample_shape canvas
        sheet.paste(to_rgb(pil, name).resize((w * c, h * c), PIL.Image.BICUBIC), (left * c, top * c))
        tokens = self.encode_images(preprocess(sheet, s))[0]  # (N, M)
        rows = torch.arange(top, top + h)
        cols = torch.arange(left, left + w)
        positions = (rows[:, None] * self.grid_shape[1] + cols[None, :]).reshape(-1).to(tokens.device)
        return tokens[positions].cpu(), positions.cpu()

    def _cell_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """Pixel mask (B, 1, H, W) in {0,1} -> (B, N) bool: a cell is editable if any of its pixels is masked."""
        return (F.adaptive_max_pool2d(mask, self.grid_shape) > 0.5).reshape(mask.shape[0], -1)

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

    def _logits(self, cond: Dict[str, Any], uncond: Optional[Dict[str, Any]], tokens: torch.Tensor, guidance_scale: float,
                guidance_min_p: float = 0.0, contrast: Optional[Dict[str, Any]] = None,
                negative_guidance_scale: Optional[float] = None) -> torch.Tensor:
        """Logits `(B, N, M, K)` of one pass: the conditional pass's, or with guidance `l_u + s * (l_c - l_u)` (plus
        `s_n * (l_c - l_n)` with a `contrast` pass on the negative prompt and `negative_guidance_scale` s_n) where
        tokens below `guidance_min_p` x the conditional pass's most likely one are set to `-inf`."""
        logits = self._forward(cond, tokens)
        if uncond is not None and guidance_scale > 1.0:
            logits_u = self._forward(uncond, tokens)
            guided = logits_u + guidance_scale * (logits - logits_u)
            if contrast is not None:
                guided = guided + negative_guidance_scale * (logits - self._forward(contrast, tokens))
            if guidance_min_p > 0.0:  # p_c < min_p * max p_c  <=>  l_c - max l_c < log(min_p)
                implausible = logits - logits.amax(-1, keepdim=True) < math.log(guidance_min_p)
                guided = guided.masked_fill(implausible, float("-inf"))
            logits = guided
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
        guidance_scale: Optional[float] = None,
        negative_prompt: Union[str, List[str], None] = None,
        guidance_min_p: float = DEFAULT_GUIDANCE_MIN_P,
        negative_guidance_scale: Optional[float] = None,
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
                it is generated. The tokens of the kept cells are read from the image with its border pixels
                continued one cell outward (`m6_fashion_core.image.outpainting_sheets`), so a garment cut by the
                box edge is continued rather than closed off.
            reference_images: local editing: a list of `(patch_image, box)`; each patch is resized into its box
                and given to the model as a visual condition at that place. Several pairs = several conditions.
            height, width: output size in pixels (default `pipe.default_size`: 256 x 192 with `decoder_hr`,
                else `sample_size` square); one alone keeps the default aspect ratio. `pipe.output_sizes()` lists
                the accepted sizes; others raise. Boxes are given on this output.
            num_inference_steps: T, SMART passes (default 10).
            num_images_per_prompt: images per prompt.
            guidance_scale: classifier-free guidance scale (1.0 = off); > 1 runs an unconditional pass too and
                needs a prompt or reference patches to steer towards (refused without either). `None` (default):
                12.0 for text-to-image (prompt text, no `image`, no `reference_images`), 1.0 for every other task.
                With `guidance_min_p` it is as close to real photos as no guidance and more faithful to the prompt
                (`m6-fashion evaluate` on 798 test captions: FID 152.6 against 152.5, higher hit rates; unseen
                colour x article pairs right about 4x as often); it runs two model passes per step.
            guidance_min_p: with guidance, tokens whose probability under the prompt-conditioned pass is below this
                share of its most likely token's are excluded after the guidance mix (default 0.1; 0 = off), so
                guidance re-ranks only what the prompt makes plausible. Any other value without guidance is refused.
            negative_prompt: what the guidance pass reads instead of no text (one string, or one per prompt; only
                with `guidance_scale` > 1): guidance then steers away from it, towards what the prompt adds. Leaving
                the colour out of it puts the weight on the colour: `prompt="Men Red Jeans",
                negative_prompt="Men Jeans", guidance_scale=3` gives red trousers where guidance alone gives black
                jeans (an unseen colour x article pair), at the cost of some of the garment's detail.
            negative_guidance_scale: `None` (default): `negative_prompt` replaces the guidance pass's empty text, as
                above. A number `s_n` in (0, 50] keeps the empty-text pass and adds a third pass on `negative_prompt`:
                `l_u + guidance_scale * (l_c - l_u) + s_n * (l_c - l_n)`, so guidance keeps its pull towards the
                whole prompt and pushes `s_n` more on what the prompt adds to the negative prompt. With the prompt's
                colour left out of the negative prompt, `negative_guidance_scale=4` at the default guidance gets
                unseen colour x article pairs right more often without losing the article (see the README). Needs
                `negative_prompt` (and guidance, as the negative prompt does); 1.5x the time of a guided call.
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
        guidance_scale = validation.default_guidance_scale(guidance_scale, prompt, image, reference_images)
        self.check_inputs(
            prompt, image, mask_image, style_image, image_box, reference_images, num_inference_steps,
            num_images_per_prompt, guidance_scale, output_type, callback_on_step_end_tensor_inputs,
            temperature=temperature, generator=generator, refine_ratio=refine_ratio, height=height, width=width,
            callback_on_step_end=callback_on_step_end, blend_pixels=blend_pixels, context_dropout_steps=context_dropout_steps,
            negative_prompt=negative_prompt, guidance_min_p=guidance_min_p, negative_guidance_scale=negative_guidance_scale,
        )
        num_inference_steps, num_images_per_prompt = _as_int(num_inference_steps), _as_int(num_images_per_prompt)
        guidance_scale = float(guidance_scale)  # numpy scalars would turn `scale * tensor` into an array
        temperature = None if temperature is None else float(temperature)
        context_dropout_steps = validation.context_dropout_steps(
            context_dropout_steps, num_inference_steps, prompt, image, mask_image, style_image
        )
        canvas = self.output_canvas(height, width, outpainting=image is not None and image_box is not None)
        if isinstance(generator, (list, tuple)):
            generator = generator[0]
        sampling = dict(
            num_inference_steps=num_inference_steps, temperature=temperature, guidance_scale=guidance_scale,
            guidance_min_p=float(guidance_min_p), generator=generator, callback_on_step_end=callback_on_step_end,
            negative_guidance_scale=None if negative_guidance_scale is None else float(negative_guidance_scale),
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )
        if isinstance(canvas, WideOutputCanvas):
            prompts = validation.batch_prompts(prompt, image, num_images_per_prompt)
            negatives = validation.batch_negative_prompts(negative_prompt, prompts, num_images_per_prompt)
            return self._outpaint_wide(canvas, prompts, image, image_box, num_images_per_prompt, output_type,
                                       return_dict, blend_pixels, sampling, negatives)
        device = self.device
        cfg = self.transformer.config
        (rows, cols), n, k = self.grid_shape, cfg.num_image_tokens, cfg.codebook_size
        s = self.sample_shape

        # ---- batch
        prompts = validation.batch_prompts(prompt, image, num_images_per_prompt)
        b = len(prompts)

        # ---- initial tokens and editable cells
        # pixels for blending live on the decoded canvas (d = its (height, width)); the tokenizer reads sample_shape
        d = canvas.canvas_shape
        tokens = torch.full((b, n, cfg.num_groups), k, dtype=torch.long, device=device)
        editable = torch.ones(b, n, dtype=torch.bool, device=device)
        base_pixels, pixel_mask = None, None
        n_base = len(prompts) // num_images_per_prompt
        if image is not None:
            if image_box is not None:
                top, left, h, w = canvas.box_to_cells(image_box, "image_box")
                pils = [im if isinstance(im, PIL.Image.Image) else postprocess(preprocess(im, d, "image"), "pil")[0]
                        for im in _expand(image, n_base, "image")]
                # aspect kept, on white; the encoder's copy continues the image's border one cell outward
                base_pixels, token_pixels = (torch.from_numpy(a) for a in core_image.outpainting_sheets(
                    pils, d[1], d[0], (top, left, h, w), canvas.cell, (s[1], s[0])))
                pixel_mask = canvas.cells_mask([(top, left, h, w)], 0.0, len(pils))
            else:
                images = _expand(image, n_base, "image")
                base_pixels = preprocess(images, d)
                token_pixels = base_pixels if d == s else preprocess(images, s)
                if mask_image is not None:
                    masks = _expand(mask_image, base_pixels.shape[0], "mask_image")
                    pixel_mask = torch.stack([preprocess_mask(m, d, "mask_image") for m in masks])
                    validation.check_masks_select_pixels(pixel_mask.flatten(1).amax(1).numpy())
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
                pixel_mask = F.interpolate(editable.float().reshape(b, 1, rows, cols), size=d, mode="nearest").cpu()
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
        uncond, contrast = None, None
        if guidance_scale > 1.0:
            negatives = validation.batch_negative_prompts(negative_prompt, prompts, num_images_per_prompt)
            uncond, contrast = self._guidance_passes(negatives, b, tokens, sampling["negative_guidance_scale"])

        # ---- SMART loop
        tokens = self._sample(cond, uncond, tokens, editable, context_dropout_steps=context_dropout_steps, contrast=contrast, **sampling)

        grid_tokens = tokens.reshape(b, rows, cols, cfg.num_groups)
        if output_type == "tokens":
            images = None
        else:
            pixels = self.decode_tokens(tokens, side=canvas.side).cpu()
            if base_pixels is not None and blend_pixels:
                pixels = torch.where(pixel_mask.bool(), pixels, base_pixels.float())
            images = postprocess(canvas.crop(pixels), output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, grid_tokens)
        return M6FashionPipelineOutput(images=images, tokens=grid_tokens)

    def _sample(
        self, cond, uncond, tokens: torch.Tensor, editable: torch.Tensor, num_inference_steps: int, temperature,
        guidance_scale: float, generator, context_dropout_steps: int = 0, callback_on_step_end=None, guidance_min_p: float = 0.0,
        callback_on_step_end_tensor_inputs=None, contrast: Optional[Dict[str, Any]] = None,
        negative_guidance_scale: Optional[float] = None,
    ) -> torch.Tensor:
        """The SMART loop: `num_inference_steps` passes over `tokens` (B, N, M) (MASK = codebook_size where still to
        generate), re-sampling only `editable` (B, N) cells; returns the final tokens (B, N, M)."""
        k = self.transformer.config.codebook_size
        self.scheduler.set_timesteps(num_inference_steps, device=tokens.device, temperature=temperature)
        with self.progress_bar(total=num_inference_steps) as progress_bar:
            for i, t in enumerate(self.scheduler.timesteps):
                if (tokens == k).any():  # a pass with no masked cell left (few editable cells) runs no model
                    # context dropout: the first passes see the kept tokens as MASK (the sampler still gets the true ones)
                    seen = torch.where(editable[..., None], tokens, torch.full_like(tokens, k)) if i < context_dropout_steps else tokens
                    logits = self._logits(cond, uncond, seen, guidance_scale, guidance_min_p, contrast, negative_guidance_scale)
                    tokens = self.scheduler.step(logits, t, tokens, editable=editable, generator=generator).prev_sample
                if callback_on_step_end is not None:  # once per step, as in diffusers, skipped passes included
                    tokens = self._run_callback(callback_on_step_end, callback_on_step_end_tensor_inputs, i, t, tokens)
                progress_bar.update()
        return tokens

    def _run_callback(self, callback_on_step_end, tensor_inputs, i: int, t, tokens: torch.Tensor) -> torch.Tensor:
        """Calls `callback_on_step_end(pipe, step, timestep, {"tokens": ...})`; returns the tokens it hands back (checked)."""
        wanted = self._callback_tensor_inputs if tensor_inputs is None else tensor_inputs
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
        return new

    def _guidance_text(self, negatives: Optional[List[str]], b: int) -> List[List[int]]:
        """The text the guidance pass reads: the negative prompts' token ids, or no text."""
        return self.encode_prompt(negatives) if negatives is not None else [[] for _ in range(b)]

    def _guidance_passes(self, negatives: Optional[List[str]], b: int, tokens: torch.Tensor,
                         negative_guidance_scale: Optional[float]) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
        """The prepared inputs of the guidance pass and of the negative prompt's own pass (`None` unless
        `negative_guidance_scale` is set; the guidance pass then reads no text). `tokens` (B, N, M) are the target's."""
        cfg, device = self.transformer.config, self.device

        def prepared(text_ids):
            return self._prepare({key: v.to(device) for key, v in build_model_inputs(cfg, text_ids, tokens.cpu(), None).items()})

        if negative_guidance_scale is None:
            return prepared(self._guidance_text(negatives, b)), None
        return prepared(self._guidance_text(None, b)), prepared(self.encode_prompt(negatives))

    def _outpaint_wide(self, canvas: "WideOutputCanvas", prompts: List[str], image, image_box, num_images_per_prompt: int,
                       output_type: str, return_dict: bool, blend_pixels: bool, sampling: Dict[str, Any],
                       negatives: Optional[List[str]] = None):
        """Outpainting onto a canvas larger than the decoder's square (`m6_fashion_core.outpainting`).

        The image is placed in `image_box` on a white `width` x `height` sheet and tokenised whole (`rows` x `cols`
        cells); the cells outside the box are generated by SMART in windows of the model's
        `grid_shape` (gr x gc cells) in the order of `plan_windows` (each window an ordinary outpainting call whose
        context is the image and the earlier windows; `callback_on_step_end` sees each window's tokens
        (B, gr * gc, M)); the decoder of `canvas.side` paints the whole grid. Tokens are returned as (B, rows, cols, M).
        """
        cfg = self.transformer.config
        (gr, gc), k, m = self.grid_shape, cfg.codebook_size, cfg.num_groups
        device, c, s_cell = self.device, canvas.cell, self.cell
        b, rows, cols = len(prompts), canvas.rows, canvas.cols
        cells = canvas.box_to_cells(image_box, "image_box")
        pils = [im if isinstance(im, PIL.Image.Image) else postprocess(preprocess(im, canvas.canvas_shape, "image"), "pil")[0]
                for im in _expand(image, b // num_images_per_prompt, "image")]
        base_pixels, token_pixels = core_image.outpainting_sheets(
            pils, canvas.width, canvas.height, cells, c, (cols * s_cell, rows * s_cell)
        )
        base_pixels = torch.from_numpy(base_pixels).repeat_interleave(num_images_per_prompt, 0)
        grid = self.encode_images(torch.from_numpy(token_pixels)).reshape(-1, rows, cols, m)
        grid = grid.repeat_interleave(num_images_per_prompt, 0).to(device)
        known = torch.from_numpy(canvas.known_cells(cells)).to(device)
        grid = torch.where(known[None, :, :, None], grid, torch.full_like(grid, k))
        text_ids = self.encode_prompt(prompts)
        # the prefix (caption, no conditions) is the same for every window and every pass writes the window's
        # tokens into the target, so the inputs (and the prefix keys/values) are prepared once
        masked = torch.full((b, gr * gc, m), k, dtype=torch.long)
        cond = self._prepare({key: v.to(device) for key, v in build_model_inputs(cfg, text_ids, masked, None).items()})
        uncond, contrast = None, None
        if sampling["guidance_scale"] > 1.0:
            uncond, contrast = self._guidance_passes(negatives, b, masked, sampling["negative_guidance_scale"])
        for top_w, left_w in core_outpainting.plan_windows(known.cpu().numpy(), (gr, gc)):
            window = grid[:, top_w : top_w + gr, left_w : left_w + gc].reshape(b, gr * gc, m)
            editable = (window == k).all(-1)
            window = self._sample(cond, uncond, window, editable, contrast=contrast, **sampling)
            grid[:, top_w : top_w + gr, left_w : left_w + gc] = window.reshape(b, gr, gc, m)
        images = None
        if output_type != "tokens":
            pixels = self.decode_tokens(grid, side=canvas.side).cpu()
            if blend_pixels:
                generated = canvas.cells_mask([cells], 0.0, b).bool()  # everything but the placed image
                pixels = torch.where(generated, pixels, base_pixels.float())
            images = postprocess(pixels, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, grid)
        return M6FashionPipelineOutput(images=images, tokens=grid)

    def _seam(self, region: torch.Tensor, refine_ratio: float, generator: Optional[torch.Generator]) -> torch.Tensor:
        """Cells on both sides of the border of `region` (B, N) bool, plus `refine_ratio` of the cells in and next to
        it drawn with `generator`: the part SMART refines after style mixing (`m6_fashion_core.validation.seam_cells`)."""
        device = generator.device if generator is not None else region.device

        def draw(shape):  # float32 uniforms (B, 1, rows, cols) on the generator's device, as the random cells always were
            b, rows, cols = shape
            return torch.rand((b, 1, rows, cols), generator=generator, device=device).cpu().numpy().reshape(shape)

        cells = validation.seam_cells(region.cpu().numpy(), self.grid_shape, refine_ratio, draw)
        return torch.from_numpy(cells).to(region.device)


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


_as_list = validation.as_list
_as_int = validation.as_int


def _expand(x, batch: int, name: str) -> list:
    """One image (or mask) per prompt; a `(B, C, H, W)` tensor counts as B images."""
    items = list(x) if isinstance(x, torch.Tensor) and x.ndim == 4 else _as_list(x)
    return validation.expand_per_prompt(items, batch, name)


def _check_generator(generator) -> None:
    """One `torch.Generator`, a list holding exactly one, or None."""
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


def check_components(image_tokenizer, transformer, scheduler, decoder=None, decoder_hr=None, tokenizer=None) -> None:
    """The invariants the components must share, checked once when a pipeline is assembled.

    The transformer's ``codebook_size`` K is the image MASK code: the scheduler's ``mask_token_id`` must
    equal it, and the image tokenizer must produce ``num_groups`` codes in ``[0, K)`` on the transformer's grid;
    the text ``tokenizer``'s ids must fit the transformer's ``vocab_size`` (``m6_fashion_core.validation.
    component_mismatches``, which the runtime checks on a bundle too). Both decoders read the tokenizer's latents
    and paint their ``sample_size`` square from the token grid.
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
    problems += validation.component_mismatches(
        grid_size=t.grid_size, codebook_size=t.codebook_size, num_groups=t.num_groups, vocab_size=t.vocab_size,
        mask_code=sc.mask_token_id, sample_size=getattr(q, "sample_size", None),
        tokenizer_grid_size=getattr(image_tokenizer, "grid_size", None),
        grid_shape=tuple(t.grid_shape),
        tokenizer_grid_shape=getattr(image_tokenizer, "grid_shape", None),
        tokenizer_codebook_size=getattr(q, "codebook_size", None),
        tokenizer_num_groups=getattr(image_tokenizer, "num_token_groups", None),
        text_vocab_size=len(tokenizer) if hasattr(tokenizer, "__len__") else None,
    )
    if problems:
        raise ValueError("the pipeline's components do not fit together: " + "; ".join(problems))


CHECKSUM_FILE = "checksums.sha256"
# weights, configs and the generic loader's entry point; model cards (README.md) may be edited freely
_CHECKED_SUFFIXES = (".safetensors", ".json", ".py")
HUB_ENTRY_FILE = "m6_fashion_pipeline.py"  # a copy of m6_fashion/hub_entry.py


def write_hub_entry_point(folder: str) -> None:
    """Makes a saved pipeline folder loadable by ``diffusers.DiffusionPipeline.from_pretrained(folder,
    trust_remote_code=True)``: copies ``m6_fashion/hub_entry.py`` in as ``m6_fashion_pipeline.py`` and sets
    ``model_index.json``'s ``_class_name`` to ``["m6_fashion_pipeline", "M6FashionPipeline"]``."""
    import json
    import shutil

    from .. import hub_entry

    shutil.copyfile(hub_entry.__file__, os.path.join(folder, HUB_ENTRY_FILE))
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
