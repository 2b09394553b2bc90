"""Images end to end with the openai client: txt2img, img2img, seeds, sizes and errors."""

import base64
import io

import pytest
from PIL import Image

from engines.models import Engine, GeneratedImage

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def pixels(db, tiny_diffusion_path):
    return Engine.objects.create(name="pixels", kind="diffusion", model=tiny_diffusion_path,
                                 config={"max_size": 128, "max_steps": 20, "max_batch_size": 4, "batch_wait_ms": 50})


def image_of(item):
    return Image.open(io.BytesIO(base64.b64decode(item.b64_json)))


def generate(client, **kwargs):
    return client.images.generate(model="pixels", prompt="a red cat", size="64x64", extra_body={"steps": 2, **kwargs})


def test_txt2img_returns_pngs_of_the_asked_size_and_stores_them(engine_worker, pixels, openai_client):
    response = openai_client.images.generate(model="pixels", prompt="a red cat", size="64x128", n=2,
                                             extra_body={"steps": 2, "seed": 5})
    assert [image_of(item).size for item in response.data] == [(64, 128), (64, 128)]
    assert GeneratedImage.objects.filter(engine="pixels").count() == 2


def test_the_same_seed_gives_the_same_image(engine_worker, pixels, openai_client):
    first, again = (generate(openai_client, seed=42).data[0].b64_json for _ in range(2))
    other = generate(openai_client, seed=43).data[0].b64_json
    assert first == again and first != other


def test_img2img_transforms_an_uploaded_image(engine_worker, pixels, openai_client):
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "blue").save(buffer, format="PNG")
    response = openai_client.images.edit(model="pixels", image=("in.png", buffer.getvalue(), "image/png"),
                                         prompt="make it red", size="64x64", extra_body={"steps": 4, "seed": 1})
    assert image_of(response.data[0]).size == (64, 64)


@pytest.mark.parametrize("kwargs, param", [
    ({"size": "4096x4096"}, "size"), ({"size": "65x64"}, "size"), ({"size": "big"}, "size"),
    ({"n": 0}, "n"), ({"extra_body": {"steps": 500}}, "steps"), ({"extra_body": {"seed": -1}}, "seed"),
    ({"extra_body": {"guidance_scale": "loud"}}, "guidance_scale"),
])
def test_bad_image_parameters_are_400s_naming_the_field(engine_worker, pixels, openai_client, kwargs, param):
    import openai

    with pytest.raises(openai.BadRequestError) as error:
        openai_client.images.generate(model="pixels", prompt="x", **{"size": "64x64", **kwargs})
    assert error.value.body["param"] == param


def test_an_unreadable_upload_is_a_400(engine_worker, pixels, openai_client):
    import openai

    with pytest.raises(openai.BadRequestError) as error:
        openai_client.images.edit(model="pixels", image=("in.png", b"not an image", "image/png"), prompt="x",
                                  size="64x64")
    assert error.value.body["param"] == "image"
