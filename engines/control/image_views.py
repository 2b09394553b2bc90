"""Generated images (stored by `services.store_images`), served only to signed-in users."""

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404

from engines.models import GeneratedImage


@login_required
def image_file(request, pk):
    image = GeneratedImage.objects.filter(pk=pk).first()
    if image is None or not request.user.has_perm("engines.view_engine"):
        raise Http404("No such image.")
    return FileResponse(image.file.open("rb"), content_type="image/png")
