import base64
import io

import numpy
import pytest
from PIL import Image

from core.errors import InvalidInput
from engines.contract import EngineSpec, RuntimeLoadError
from engines.worker.runtimes.diffusion import DiffusionRuntime


def runtime_for(path, **config):
    return DiffusionRuntime(EngineSpec(name="tiny", kind="diffusion", model=str(path), config=config), "cpu")


@pytest.fixture(scope="module")
def tiny(tiny_diffusion_path):
    runtime = runtime_for(tiny_diffusion_path, max_size=128, max_steps=10)
    runtime.load()
    yield runtime
    runtime.unload()


def request(**fields):
    return {"prompt": "a red cat", "negative_prompt": None, "steps": 2, "width": 64, "height": 64,
            "guidance_scale": 7.5, "seed": 1, "n": 1, "image": None, "strength": None, **fields}


def generate(runtime, *requests, events=None):
    def emit(index, event):
        if events is not None:
            events.append((index, event))
    return runtime.run_batch(list(requests), emit)


def pixels(b64_png):
    return numpy.asarray(Image.open(io.BytesIO(base64.b64decode(b64_png))), dtype=numpy.int16)


def test_text_to_image_returns_n_pngs_of_the_asked_size(tiny):
    [result] = generate(tiny, request(n=2, width=64, height=128))
    assert result["seed"] == 1
    images = [Image.open(io.BytesIO(base64.b64decode(png))) for png in result["images"]]
    assert [(image.format, image.size) for image in images] == [("PNG", (64, 128))] * 2


def test_same_seed_same_image_other_seed_other_image(tiny):
    [first], [again], [other] = (generate(tiny, request(seed=seed)) for seed in (7, 7, 8))
    assert first["images"] == again["images"]
    assert first["images"] != other["images"]


def test_a_request_gives_the_same_images_alone_and_batched(tiny):
    alone = generate(tiny, request(seed=3, n=2))[0]["images"]
    batched = generate(tiny, request(prompt="a blue dog", seed=5), request(seed=3, n=2))
    # Batched matmuls may round differently on CPU: pixels within 2 levels, not byte-for-byte.
    for got, want in zip(batched[1]["images"], alone, strict=True):
        assert numpy.abs(pixels(got) - pixels(want)).max() <= 2


def test_image_to_image_returns_the_asked_size(tiny):
    png = io.BytesIO()
    Image.new("RGB", (100, 80), "red").save(png, format="PNG")
    [result] = generate(tiny, request(image=base64.b64encode(png.getvalue()).decode(), strength=0.5, steps=4))
    assert Image.open(io.BytesIO(base64.b64decode(result["images"][0]))).size == (64, 64)


def test_unreadable_input_image_fails_only_its_request(tiny):
    good = io.BytesIO()
    Image.new("RGB", (64, 64), "blue").save(good, format="PNG")
    broken, fine = generate(tiny, request(image=b"not a png", strength=0.5),
                            request(image=good.getvalue(), strength=0.5))
    assert "cannot be read" in broken["error"]
    assert len(fine["images"]) == 1


def test_progress_is_reported_per_step_for_each_request(tiny):
    events = []
    generate(tiny, request(steps=3), request(seed=2, steps=3), events=events)
    for index in (0, 1):
        steps = [(event["step"], event["total"]) for i, event in events if i == index]
        assert steps == [(1, 3), (2, 3), (3, 3)]
    assert all(event["type"] == "progress" for _, event in events)


def test_a_batch_whose_clients_all_gave_up_skips_its_remaining_steps_and_logs_how_many_ran(tiny, caplog):
    events, gave_up = [], {0: False, 1: False}

    def emit(index, event):
        events.append((index, event))
        if event["step"] == 2:
            gave_up[index] = True  # both clients press Stop after the second step

    tiny.run_batch([request(steps=8, cancelled=lambda: gave_up[0]),
                    request(seed=2, steps=8, cancelled=lambda: gave_up[1])], emit)
    assert [event["step"] for i, event in events if i == 0] == [1, 2]
    stopped = [record for record in caplog.records if hasattr(record, "steps_run")]
    assert [(record.steps_run, record.steps) for record in stopped] == [(2, 8)]


def test_one_client_giving_up_does_not_cut_its_batch_mate_short(tiny):
    events = []
    tiny.run_batch([request(steps=4, cancelled=lambda: True), request(seed=2, steps=4)],
                   lambda index, event: events.append((index, event)))
    assert [event["step"] for i, event in events if i == 1] == [1, 2, 3, 4]


@pytest.mark.parametrize("size", [(72, 200), (60, 64)])
def test_size_beyond_max_or_off_the_8_pixel_grid_is_refused(tiny, size):
    with pytest.raises(InvalidInput) as error:
        generate(tiny, request(width=size[0], height=size[1]))
    assert error.value.field == "size"


def test_requests_of_different_shapes_get_different_batch_keys(tiny):
    assert tiny.batch_key(request()) == tiny.batch_key(request(prompt="other", seed=9, n=3))
    assert tiny.batch_key(request()) != tiny.batch_key(request(width=128))
    assert tiny.batch_key(request()) != tiny.batch_key(request(image=b"png", strength=0.5))


def test_half_precision_on_cpu_is_a_load_error(tiny_diffusion_path):
    with pytest.raises(RuntimeLoadError, match="CUDA"):
        runtime_for(tiny_diffusion_path, precision="fp16").load()


def test_cpu_offload_on_cpu_is_a_load_error(tiny_diffusion_path):
    with pytest.raises(RuntimeLoadError, match="CUDA"):
        runtime_for(tiny_diffusion_path, cpu_offload="model").load()


def test_slicing_options_load_and_still_draw(tiny_diffusion_path):
    runtime = runtime_for(tiny_diffusion_path, attention_slicing=True, vae_slicing=True)
    runtime.load()
    assert len(generate(runtime, request(n=2))[0]["images"]) == 2


def test_estimate_matches_the_loaded_weights(tiny, tiny_diffusion_path):
    assert tiny.estimate_bytes() == pytest.approx(tiny.loaded_bytes(), rel=0.01)
    half = runtime_for(tiny_diffusion_path, precision="fp16")
    assert half.estimate_bytes() == pytest.approx(tiny.estimate_bytes() / 2)
    assert tiny.health() == {"device": "cpu", "dtype": "fp32"}


def test_missing_pipeline_is_a_load_error(tmp_path):
    with pytest.raises(RuntimeLoadError, match="model_index.json"):
        runtime_for(tmp_path).load()
