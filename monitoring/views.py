from django.http import JsonResponse
from django.views.decorators.cache import never_cache


@never_cache
def health(request):
    """Liveness: the process answers. Cheap and unauthenticated, for load balancers."""
    return JsonResponse({"status": "ok"})
