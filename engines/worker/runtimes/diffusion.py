"""Text-to-image and image-to-image with a diffusers pipeline in a local directory."""

import base64
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import InvalidInput
from engines.contract import EngineSpec, RuntimeLoadError
from engines.worker.runtimes import DiffusionRequest, Emit, parameter_count, release_memory, tensor_bytes

if TYPE_CHECKING:
    from PIL.Image import Image

BYTES_PER_PARAMETER = {"fp32": 4, "fp16": 2, "bf16": 2}

log = logging.getLogger(__name__)


class DiffusionRuntime:
    """A diffusers pipeline folder, loaded once for text-to-image; image-to-image shares its components.

    A request is {"prompt", "negative_prompt" (or None), "steps", "width", "height", "guidance_scale", "seed",
    "n", "image" (a PNG/JPEG, base64 or bytes; None for text-to-image), "strength"}; its result
    {"images": [base64 PNG, ...], "seed": seed} (base64: results travel as JSON). Image j of a request is
    drawn from seed + j, so a request gives the same images alone or batched. Progress is emitted per
    denoising step as {"type": "progress", "step": k, "total": steps run} (img2img runs steps × strength).
    A request may carry "cancelled", a callable true once its client gave up: when every request of a
    batch has, the remaining steps are skipped, and the worker's log says after how many steps
    ("steps_run" of "steps").
    """

    def __init__(self, spec: EngineSpec, device: str) -> None:
        self.spec = spec
        self.device = device
        config = spec.config
        self.precision = config.get("precision", "fp32")
        self.max_steps = config.get("max_steps", 50)
        self.max_size = config.get("max_size", 1024)
        self.attention_slicing = config.get("attention_slicing", False)
        self.vae_slicing = config.get("vae_slicing", False)
        self.cpu_offload = config.get("cpu_offload", "none")
        self.safety_checker = config.get("safety_checker", True)
        self.text_to_image: Any = None  # the diffusers pipelines, once loaded
        self.image_to_image: Any = None

    def estimate_bytes(self) -> int:
        return parameter_count(self.spec.model) * BYTES_PER_PARAMETER[self.precision]

    def load(self) -> None:
        folder = Path(self.spec.model)
        if not (folder / "model_index.json").is_file():
            raise RuntimeLoadError(f"No diffusers pipeline at {folder} (model_index.json is missing).")
        on_cuda = self.device.startswith("cuda")
        if self.precision != "fp32" and not on_cuda:
            raise RuntimeLoadError(
                f"precision {self.precision} needs a CUDA device; this worker runs on {self.device}: use fp32."
            )
        if self.cpu_offload != "none":
            if not on_cuda:
                raise RuntimeLoadError(
                    f"cpu_offload '{self.cpu_offload}' moves weights between CPU and a CUDA device; "
                    f"this worker runs on {self.device}: set cpu_offload to 'none'."
                )
            try:
                import accelerate  # noqa: F401
            except ImportError as exc:
                raise RuntimeLoadError(f"cpu_offload '{self.cpu_offload}' needs the accelerate package.") from exc

        import torch
        from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image

        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.precision]
        options: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
        if not self.safety_checker and "safety_checker" in json.loads((folder / "model_index.json").read_text()):
            options.update(safety_checker=None, requires_safety_checker=False)
        try:
            text_to_image = AutoPipelineForText2Image.from_pretrained(str(folder), **options)
            image_to_image = AutoPipelineForImage2Image.from_pipe(text_to_image)
        except Exception as exc:
            raise RuntimeLoadError(f"Could not load the diffusion pipeline in {folder}: {exc}") from exc

        for pipe in (text_to_image, image_to_image):
            pipe.set_progress_bar_config(disable=True)
            # Offloading hooks are per pipeline (each call re-installs its own on the shared modules).
            if self.cpu_offload == "model":
                pipe.enable_model_cpu_offload(device=self.device)
            elif self.cpu_offload == "sequential":
                pipe.enable_sequential_cpu_offload(device=self.device)
        if self.cpu_offload == "none":
            text_to_image.to(self.device)
        if self.attention_slicing:
            text_to_image.enable_attention_slicing()  # sets the shared UNet's processors: both pipelines
        if self.vae_slicing:
            text_to_image.vae.enable_slicing()
        self.text_to_image, self.image_to_image = text_to_image, image_to_image

    def unload(self) -> None:
        self.text_to_image = self.image_to_image = None
        release_memory(self.device)

    def loaded_bytes(self) -> int:
        if self.text_to_image is None:
            return 0
        import torch

        return tensor_bytes(*(part for part in self.text_to_image.components.values()
                              if isinstance(part, torch.nn.Module)))

    def batch_key(self, request: DiffusionRequest) -> tuple[int, int, int, str, float, float | None]:
        mode = "img2img" if request.get("image") is not None else "txt2img"
        # Strength is one argument of the pipeline call (it picks the timesteps), so it is part of the shape.
        strength = request.get("strength") if mode == "img2img" else None
        return (request["width"], request["height"], request["steps"], mode, request["guidance_scale"], strength)

    def batch_size(self, request: DiffusionRequest) -> int:
        return request.get("n", 1)

    def run_batch(self, requests: Sequence[DiffusionRequest], emit: Emit) -> list[dict[str, Any]]:
        import torch

        first = requests[0]
        if any(self.batch_key(request) != self.batch_key(first) for request in requests):
            raise ValueError("Requests in one diffusion batch must share batch_key (size, steps, mode, guidance).")
        self._check_shape(first)
        results: list[dict[str, Any]] = [{"images": [], "seed": request["seed"]} for request in requests]
        inputs: dict[int, Image] = {}
        for index, request in enumerate(requests):
            image = request.get("image")
            if image is not None:  # every request of the batch has one, or none has (its batch_key)
                try:
                    inputs[index] = _decode_image(image, (first["width"], first["height"]))
                except (OSError, ValueError) as exc:
                    results[index] = {"error": f"The input image cannot be read as an image: {exc}"}
        # One row per image to draw: request i contributes n rows, drawn from seed, seed + 1, ...
        rows = [(index, j) for index, request in enumerate(requests) for j in range(request.get("n", 1))
                if "error" not in results[index]]
        if not rows:
            return results

        drawing = sorted({index for index, _ in rows})
        ran = [0]

        def report_progress(pipe: Any, step_index: int, timestep: Any,
                            callback_kwargs: dict[str, Any]) -> dict[str, Any]:
            ran[0] = step_index + 1
            for index in drawing:
                emit(index, {"type": "progress", "step": step_index + 1, "total": pipe.num_timesteps})
            if all((requests[index].get("cancelled") or _never)() for index in drawing):
                pipe._interrupt = True  # every client gave up: diffusers skips the remaining steps
            return callback_kwargs

        arguments: dict[str, Any] = {
            "prompt": [requests[index]["prompt"] for index, _ in rows],
            "generator": [torch.Generator("cpu").manual_seed(requests[index]["seed"] + j) for index, j in rows],
            "num_inference_steps": first["steps"],
            "guidance_scale": first["guidance_scale"],
            "callback_on_step_end": report_progress,
        }
        if any(requests[index].get("negative_prompt") for index, _ in rows):
            arguments["negative_prompt"] = [requests[index].get("negative_prompt") or "" for index, _ in rows]
        if inputs:
            pipe = self.image_to_image
            arguments.update(image=[inputs[index] for index, _ in rows], strength=first["strength"])
        else:
            pipe = self.text_to_image
            arguments.update(width=first["width"], height=first["height"])
        with torch.inference_mode():
            images = pipe(**arguments).images
        if pipe.interrupt:
            log.info("%s: every client of a batch of %d gave up: stopped after %d of %d steps", self.spec.name,
                     len(drawing), ran[0], pipe.num_timesteps,
                     extra={"engine": self.spec.name, "steps_run": ran[0], "steps": pipe.num_timesteps})

        for (index, _), image in zip(rows, images):
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            results[index]["images"].append(base64.b64encode(buffer.getvalue()).decode())
        return results

    def _check_shape(self, request: DiffusionRequest) -> None:
        """What the API validates already, checked again: a wrong shape here would fail deep in the UNet."""
        width, height, steps = request["width"], request["height"], request["steps"]
        if max(width, height) > self.max_size or width % 8 or height % 8:
            raise InvalidInput(
                f"Size {width}x{height}: each side must be a multiple of 8 and at most {self.max_size}.", field="size"
            )
        if steps > self.max_steps:
            raise InvalidInput(f"At most {self.max_steps} steps on this engine.", field="steps")
        strength = request.get("strength")
        if request.get("image") is not None and strength is not None and int(steps * strength) < 1:
            raise InvalidInput(
                f"strength {strength} with {steps} steps leaves no denoising step: raise either.",
                field="strength",
            )

    def health(self) -> dict[str, Any]:
        return {"device": self.device, "dtype": self.precision}


def _never() -> bool:
    return False


def _decode_image(data: str | bytes, size: tuple[int, int]) -> "Image":
    from PIL import Image

    if isinstance(data, str):
        data = base64.b64decode(data)
    return Image.open(io.BytesIO(data)).convert("RGB").resize(size)
