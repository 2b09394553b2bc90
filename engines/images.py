"""Generated images on disk (MEDIA_ROOT) with a row each, served only to signed-in users."""

import uuid

from django.contrib.auth.decorators import login_required
from django.core.files.base import ContentFile
from django.http import FileResponse, Http404
from django.urls import reverse

from .models import GeneratedImage


def store_images(user, engine_name, payload, seed, pngs):
    """Save each PNG; returns the URL path of each."""
    params = {k: v for k, v in payload.items() if k not in ("image", "prompt")}
    urls = []
    for index, png in enumerate(pngs):
        image = GeneratedImage(user=user, engine=engine_name, prompt=payload["prompt"], params=params, seed=seed + index)
        image.file.save(f"{uuid.uuid4().hex}.png", ContentFile(png), save=True)
        urls.append(reverse("engines:image", args=[image.pk]))
    return urls


@login_required
def image_file(request, pk):
    image = GeneratedImage.objects.filter(pk=pk).first()
    if image is None or not request.user.has_perm("engines.view_engine"):
        raise Http404("No such image.")
    return FileResponse(image.file.open("rb"), content_type="image/png")
