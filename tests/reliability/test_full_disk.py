"""A disk that fills under the image store: a clear 507 naming the store, and nothing half kept."""

import errno

import pytest
from django.core.files.storage import FileSystemStorage

from blaze_site import errors
from blaze_site.exceptions import http_status
from engines import services
from engines.models import GeneratedImage

pytestmark = [pytest.mark.reliability, pytest.mark.django_db]


def test_a_full_disk_keeps_neither_files_nor_rows_and_says_so(settings, tmp_path, monkeypatch):
    settings.MEDIA_ROOT = tmp_path
    real_save, saved = FileSystemStorage._save, []

    def save_until_full(storage, name, content):
        if saved:
            raise OSError(errno.ENOSPC, "No space left on device")
        saved.append(real_save(storage, name, content))
        return saved[-1]

    monkeypatch.setattr(FileSystemStorage, "_save", save_until_full)
    with pytest.raises(errors.StorageFull) as refused:
        services.store_images(user=None, engine_name="paint", payload={"prompt": "a cat", "steps": 2}, seed=1,
                              pngs=[b"\x89PNG first", b"\x89PNG second"])
    assert "No space left on device" in refused.value.message and str(tmp_path) in refused.value.message
    assert http_status(refused.value) == 507
    assert GeneratedImage.objects.count() == 0 and not any(tmp_path.rglob("*.png"))  # the first file went too
