from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.audit import Actor
from accounts.permissions import RolePermission

from . import services
from .models import IpBlock
from .selectors import active_blocks, security_status
from .serializers import IpBlockSerializer, SecurityStatusSerializer


class IpBlockViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                     mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """The active IP blocks (admins). POST blocks an address or network, with a reason and an optional
    `expires_at`; DELETE lifts a block. Both are audited."""

    serializer_class = IpBlockSerializer
    permission_classes = [RolePermission]

    def get_queryset(self):
        return active_blocks()

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        block = services.ip_block(actor=Actor.from_request(request), **serializer.validated_data)
        return Response(IpBlockSerializer(block).data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance):
        services.ip_unblock(actor=Actor.from_request(self.request), block=instance)


class SecurityStatus(APIView):
    """Recent security events, their counts by kind over the last 24 hours, and the active blocks (admins)."""

    permission_classes = [RolePermission]
    queryset = IpBlock.objects.none()  # tells RolePermission the model: GET needs security.view_ipblock

    @extend_schema(responses=SecurityStatusSerializer)
    def get(self, request):
        return Response(SecurityStatusSerializer(security_status()).data)
