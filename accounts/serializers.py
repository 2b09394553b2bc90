from rest_framework import serializers

from core.serializers import StrictInput

from .models import ApiKey, AuditEvent, Team, User


class CredentialsSerializer(StrictInput, serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=1024, trim_whitespace=False)
    otp = serializers.CharField(max_length=12, required=False, allow_blank=True, default="")


class MeSerializer(serializers.ModelSerializer):
    role = serializers.CharField(read_only=True)
    mfa_enabled = serializers.SerializerMethodField()
    permissions = serializers.SerializerMethodField()
    teams = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True,
                                         help_text="The teams the user belongs to (keys may be issued for them).")

    class Meta:
        model = User
        fields = ["id", "username", "email", "role", "teams", "mfa_enabled", "permissions", "last_login",
                  "date_joined"]

    def get_mfa_enabled(self, user) -> bool:
        return user.totpdevice_set.filter(confirmed=True).exists()

    def get_permissions(self, user) -> list[str]:
        return sorted(user.get_all_permissions())


class UserSerializer(StrictInput, serializers.ModelSerializer):
    """A user out, and in when an admin creates one (with a first password)."""

    role = serializers.ChoiceField(["admin", "operator", "viewer"])
    password = serializers.CharField(write_only=True, min_length=8, max_length=1024)

    class Meta:
        model = User
        fields = ["id", "username", "email", "role", "is_active", "password", "last_login", "date_joined"]
        read_only_fields = ["id", "last_login", "date_joined"]


class UserChangeSerializer(UserSerializer):
    """A user as PUT and PATCH change it: role, email, active. The username is fixed once made, and a
    password is changed by its owner on the account page, where the old one is asked: neither is input
    here (the same username is let through, so a GET's body can be sent back)."""

    password = None

    class Meta(UserSerializer.Meta):
        fields = [name for name in UserSerializer.Meta.fields if name != "password"]
        read_only_fields = [*UserSerializer.Meta.read_only_fields, "username"]

    def to_internal_value(self, data):
        if hasattr(data, "keys"):  # each says where it is done instead, rather than "Unknown field."
            refused = {}
            if "username" in data and data["username"] != self.instance.username:
                refused["username"] = ["A username cannot change."]
            if "password" in data:
                refused["password"] = ["Users change their own password on their account page."]
            if refused:
                raise serializers.ValidationError(refused)
        return super().to_internal_value(data)


class TeamSerializer(StrictInput, serializers.ModelSerializer):
    """A team out (its members by username), and its name and description in. Members are added and
    removed at …/members/, one at a time, each change audited."""

    members = serializers.SerializerMethodField(help_text="The members' usernames, in order.")

    class Meta:
        model = Team
        fields = ["id", "name", "description", "members", "created_at"]
        read_only_fields = ["id", "created_at"]

    def get_members(self, team) -> list[str]:
        return sorted(member.username for member in team.members.all())

    def to_internal_value(self, data):
        if hasattr(data, "keys") and "members" in data:  # where it is done instead, rather than dropped unread
            raise serializers.ValidationError({"members": ["Add and remove members at /api/teams/<name>/members/."]})
        return super().to_internal_value(data)


class TeamMemberSerializer(StrictInput, serializers.Serializer):
    username = serializers.SlugRelatedField(
        slug_field="username", queryset=User.objects.all(),
        error_messages={"does_not_exist": "No user named '{value}'."},
    )


class OwnTeamField(serializers.SlugRelatedField):
    """A team by name among the requesting user's own: a key is issued for its owner, and only for a team
    they belong to (the service checks it again). Another team reads as none, so its name does not leak."""

    def get_queryset(self):
        request = self.context.get("request")
        return request.user.teams.all() if request is not None else Team.objects.none()


class ApiKeySerializer(StrictInput, serializers.ModelSerializer):
    scopes = serializers.ListField(
        child=serializers.ChoiceField(ApiKey.SCOPES), min_length=1, max_length=len(ApiKey.SCOPES)
    )
    owner = serializers.CharField(source="user.username", read_only=True)
    state = serializers.CharField(read_only=True)
    team = OwnTeamField(
        slug_field="name", queryset=Team.objects.none(), required=False, allow_null=True,
        error_messages={"does_not_exist": "You are not a member of a team named '{value}'."},
        help_text="The team its usage counts for, one you belong to. Null or absent: your own key.",
    )

    class Meta:
        model = ApiKey
        fields = [
            "id", "name", "prefix", "owner", "team", "scopes", "state", "priority",
            "created_at", "expires_at", "last_used_at", "revoked_at",
        ]
        read_only_fields = ["id", "prefix", "owner", "state", "created_at", "last_used_at", "revoked_at"]


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "id", "time", "actor", "action", "target_type", "target_id", "target", "changes", "data", "ip",
            "user_agent", "request_id",
        ]


class AuditFilterSerializer(serializers.Serializer):
    action = serializers.CharField(required=False, allow_blank=True, max_length=100)
    actor = serializers.CharField(required=False, allow_blank=True, max_length=200)
    target = serializers.CharField(required=False, allow_blank=True, max_length=300)
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)

    def validate(self, attrs):
        if attrs.get("since") and attrs.get("until") and attrs["since"] > attrs["until"]:
            raise serializers.ValidationError({"until": ["Must not be before 'since'."]})
        return attrs
