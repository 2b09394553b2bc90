from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import generics, mixins, parsers, permissions, serializers, status, viewsets
from rest_framework.authtoken.models import Token
from rest_framework.decorators import action, api_view, parser_classes, permission_classes
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.response import Response
from rest_framework_simplejwt.tokens import RefreshToken

from . import services
from .audit import Actor
from .csv_export import audit_csv_response
from .models import AuditEvent, Team, User
from .permissions import RolePermission, ScopePermission, TeamPermission
from .selectors import api_keys_visible_to, audit_events, teams_visible_to
from .serializers import (
    ApiKeySerializer,
    AuditEventSerializer,
    AuditFilterSerializer,
    CredentialsSerializer,
    MeSerializer,
    TeamMemberSerializer,
    TeamSerializer,
    UserChangeSerializer,
    UserSerializer,
)

# Username and password are flat strings, so the credential exchanges take a form as well as JSON.
CREDENTIAL_PARSERS = [parsers.JSONParser, parsers.FormParser, parsers.MultiPartParser]


def _signed_in_user(request):
    credentials = CredentialsSerializer(data=request.data, context={"request": request})
    credentials.is_valid(raise_exception=True)
    return services.sign_in_for_api(actor=Actor.from_request(request), **credentials.validated_data)


@extend_schema(
    request=CredentialsSerializer, summary="Exchange username, password (and TOTP code) for a JWT pair",
    responses=inline_serializer("JwtPair", {"refresh": serializers.CharField(), "access": serializers.CharField()}),
)
@api_view(["POST"])
@parser_classes(CREDENTIAL_PARSERS)
@permission_classes([permissions.AllowAny])
def jwt_obtain(request):
    refresh = RefreshToken.for_user(_signed_in_user(request))
    return Response({"refresh": str(refresh), "access": str(refresh.access_token)})


@extend_schema(
    request=CredentialsSerializer, summary="Exchange username, password (and TOTP code) for a DRF token",
    responses=inline_serializer("DrfToken", {"token": serializers.CharField()}),
)
@api_view(["POST"])
@parser_classes(CREDENTIAL_PARSERS)
@permission_classes([permissions.AllowAny])
def token_obtain(request):
    token, _ = Token.objects.get_or_create(user=_signed_in_user(request))
    return Response({"token": token.key})


@extend_schema(responses=MeSerializer)
@api_view(["GET"])
@permission_classes([ScopePermission])
def me(request):
    return Response(MeSerializer(request.user).data)


class ApiKeyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                    mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """Your API keys (admins see everyone's). The secret is in the create response only.

    DELETE revokes: the key stops working at once and stays listed as revoked.
    """

    serializer_class = ApiKeySerializer
    permission_classes = [ScopePermission]
    lookup_value_regex = "[0-9]+"

    def get_queryset(self):
        return api_keys_visible_to(self.request.user)

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        key, raw_key = services.api_key_create(
            actor=Actor.from_request(request), user=request.user, **serializer.validated_data
        )
        return Response({**ApiKeySerializer(key).data, "key": raw_key}, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance):
        services.api_key_revoke(actor=Actor.from_request(self.request), key=instance)

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        key = services.api_key_revoke(actor=Actor.from_request(request), key=self.get_object())
        return Response(ApiKeySerializer(key).data)


class UserViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                  mixins.UpdateModelMixin, viewsets.GenericViewSet):
    """Users and their roles (admins). Users are deactivated, never deleted: the audit log names them."""

    queryset = User.objects.prefetch_related("groups").order_by("username")
    permission_classes = [RolePermission]

    def get_serializer_class(self):
        return UserChangeSerializer if self.action in ("update", "partial_update") else UserSerializer

    def perform_create(self, serializer):
        serializer.instance = services.user_create(actor=Actor.from_request(self.request), **serializer.validated_data)

    def perform_update(self, serializer):
        user = serializer.instance
        if user == self.request.user and serializer.validated_data.get("is_active") is False:
            raise PermissionDenied("You cannot deactivate yourself.")
        serializer.instance = services.user_update(
            actor=Actor.from_request(self.request), user=user, **serializer.validated_data)


LIVE_KEYS = OpenApiResponse(OpenApiTypes.OBJECT, description="A live API key still counts for the team "
                                                                "(the message names it): revoke it first.")


@extend_schema_view(destroy=extend_schema(responses={204: None, 409: LIVE_KEYS}))
class TeamViewSet(viewsets.ModelViewSet):
    """Teams by name, that API keys are issued for so that usage counts per team. Admins see and change
    every team; anyone else reads the teams they belong to (another team is a 404). A team that a
    live key counts for cannot be deleted (409)."""

    serializer_class = TeamSerializer
    permission_classes = [TeamPermission]
    lookup_field = "name"

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no user
            return Team.objects.none()
        return teams_visible_to(self.request.user)

    def perform_create(self, serializer):
        serializer.instance = services.team_create(actor=Actor.from_request(self.request), **serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = services.team_update(
            actor=Actor.from_request(self.request), team=serializer.instance, **serializer.validated_data)

    def perform_destroy(self, instance):
        services.team_delete(actor=Actor.from_request(self.request), team=instance)

    @extend_schema(request=TeamMemberSerializer, responses=TeamSerializer)
    @action(detail=True, methods=["post"], url_path="members", url_name="members")
    def member_add(self, request, name=None):
        """Add a user to the team (already a member: nothing changes)."""
        team = self.get_object()
        member = TeamMemberSerializer(data=request.data, context=self.get_serializer_context())
        member.is_valid(raise_exception=True)
        team = services.team_member_add(actor=Actor.from_request(request), team=team,
                                        user=member.validated_data["username"])
        return Response(TeamSerializer(team).data)

    @extend_schema(request=None, responses={204: None, 409: LIVE_KEYS},
                   parameters=[OpenApiParameter("username", str, OpenApiParameter.PATH)])
    @action(detail=True, methods=["delete"], url_path=r"members/(?P<username>[^/]+)", url_name="member")
    def member_remove(self, request, name=None, username=None):
        """Take a member out of the team; refused (409) while a live key of theirs counts for it."""
        team = self.get_object()
        user = team.members.filter(username=username).first()
        if user is None:
            raise NotFound(f"{username} is not a member of team {team.name}.")
        services.team_member_remove(actor=Actor.from_request(request), team=team, user=user)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(parameters=[
    OpenApiParameter("action", str, description="Exact action or dotted prefix (`engine`)"),
    OpenApiParameter("actor", str), OpenApiParameter("target", str),
    OpenApiParameter("since", OpenApiTypes.DATETIME), OpenApiParameter("until", OpenApiTypes.DATETIME),
    OpenApiParameter("export", str, enum=["csv"],
                     description="`csv` streams the filtered log as CSV; `limit`/`offset` page it, as the list"),
], responses={(200, "application/json"): AuditEventSerializer(many=True), (200, "text/csv"): OpenApiTypes.STR})
class AuditEventList(generics.ListAPIView):
    """The audit log, newest first (admins). Read-only: there is no way to change or delete an event."""

    queryset = AuditEvent.objects.all()
    serializer_class = AuditEventSerializer
    permission_classes = [RolePermission]

    def filter_queryset(self, queryset):
        # Here, not in get_queryset: the permission check calls that, and a role that may not read the
        # log is told so (403) before its filters are read. A plain dict: in a QueryDict, DRF takes
        # `?since=` for no filter rather than a date it cannot read.
        filters = AuditFilterSerializer(data=self.request.query_params.dict())
        filters.is_valid(raise_exception=True)
        return audit_events(**filters.validated_data)

    def list(self, request, *args, **kwargs):
        export = request.query_params.get("export")
        if export == "csv":
            events = self.filter_queryset(self.get_queryset())
            if {"limit", "offset"} & request.query_params.keys():  # checked as the list checks them
                offset, limit = self.paginator.get_offset(request), self.paginator.get_limit(request)
                events = events[offset:offset + limit]
            return audit_csv_response(events)
        if export is not None:
            raise ValidationError({"export": ['Expected "csv", or no export at all.']})
        return super().list(request, *args, **kwargs)
