"""The image store's disk fills: /v1/images/generations answers a clear 507 naming the store and keeps
neither files nor rows of the pictures it could not keep, and the next request after space is freed
succeeds. A real filesystem, full for real: a small tmpfs mounted as MEDIA_ROOT of a real daphne."""

import os

import httpx
import pytest

from accounts import services as account_services
from accounts.audit import Actor
from engines.models import Engine, GeneratedImage
from tests.conftest import make_user
from tests.servers import start_daphne

pytestmark = [pytest.mark.reliability, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PAGE = 4096  # tmpfs hands out space in pages


def free_bytes(path):
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def pictures(store):
    """{path: size} of every file under the store but the filler."""
    return {path: path.stat().st_size for path in store.rglob("*") if path.is_file() and path.name != "filler"}


def test_a_full_disk_answers_507_keeps_nothing_and_the_next_request_after_space_is_freed_succeeds(
        small_disk, engine_worker, tiny_diffusion_path, tmp_path):
    Engine.objects.create(name="full-disk-pixels", kind="diffusion", model=tiny_diffusion_path,
                          config={"max_size": 128, "safety_checker": False})
    _, key = account_services.api_key_create(actor=Actor.system("test"), user=make_user("app", "viewer"),
                                             name="app", scopes=["inference"])
    web = start_daphne(tmp_path, MEDIA_ROOT=str(small_disk))
    try:
        def generate():
            # The same seed each time: the same two pictures, so their sizes are known after the first.
            return httpx.post(f"{web.url}/v1/images/generations", timeout=120,
                              headers={"Authorization": f"Bearer {key}"},
                              json={"model": "full-disk-pixels", "prompt": "a cat", "n": 2, "size": "64x64",
                                    "steps": 2, "seed": 5, "response_format": "url"})

        first = generate()
        assert first.status_code == 200, first.text
        sizes = sorted(pictures(small_disk).values())
        assert len(sizes) == 2 and GeneratedImage.objects.count() == 2
        kept_before = pictures(small_disk)

        # Room for one more picture, not for two: the first of the pair is written, the second is not.
        first_pages, second_pages = (-(-size // PAGE) for size in sizes)
        room = (first_pages + max(1, second_pages // 2)) * PAGE
        (small_disk / "filler").write_bytes(b"\0" * (free_bytes(small_disk) - room))
        assert first_pages * PAGE <= free_bytes(small_disk) < (first_pages + second_pages) * PAGE

        full = generate()
        assert full.status_code == 507, full.text
        message = full.json()["error"]["message"]
        assert "No space left on device" in message and str(small_disk) in message
        assert pictures(small_disk) == kept_before  # no half-written file, and not the one that fitted
        assert GeneratedImage.objects.count() == 2

        (small_disk / "filler").unlink()
        freed = generate()
        assert freed.status_code == 200, freed.text
        assert len(pictures(small_disk)) == 4 and GeneratedImage.objects.count() == 4
    finally:
        web.stop()
