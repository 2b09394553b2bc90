from rest_framework import exceptions, permissions

from .models import ApiKey


def required_scope(request, view):
    """The API-key scope a request needs: the view's `required_scope`, else read or manage."""
    scope = getattr(view, "required_scope", None)
    if scope:
        return scope
    return "read" if request.method in permissions.SAFE_METHODS else "manage"


class ScopePermission(permissions.BasePermission):
    """Signed in, and when the credential is an API key, the key carries the scope the call needs.

    `manage` implies `read`. Tokens, JWTs and sessions act with the user's full role.
    """

    def has_permission(self, request, view):
        if not (request.user and request.user.is_authenticated):
            return False
        if isinstance(request.auth, ApiKey):
            scope = required_scope(request, view)
            granted = set(request.auth.scopes) | ({"read"} if "manage" in request.auth.scopes else set())
            if scope not in granted:
                raise exceptions.PermissionDenied(f"This API key lacks the '{scope}' scope.")
        return True


class RolePermission(ScopePermission, permissions.DjangoModelPermissions):
    """ScopePermission plus the role's model permissions (viewing needs `view_…` too)."""

    perms_map = {
        **permissions.DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
    }

    def has_permission(self, request, view):
        if not ScopePermission.has_permission(self, request, view):
            return False
        # A method the view lacks is a 405 for everyone, not a 403 for roles without a change permission.
        if request.method not in view.allowed_methods:
            return True
        return permissions.DjangoModelPermissions.has_permission(self, request, view)


class TeamPermission(RolePermission):
    """Anyone signed in may read teams (the view shows a role without `view_team` its own teams only);
    a change needs the role's team permission, and adding or removing a member is changing the team."""

    member_actions = ("member_add", "member_remove")

    def has_permission(self, request, view):
        if request.method in permissions.SAFE_METHODS:
            return ScopePermission.has_permission(self, request, view)
        if getattr(view, "action", None) in self.member_actions:
            return ScopePermission.has_permission(self, request, view) and request.user.has_perm("accounts.change_team")
        return super().has_permission(request, view)
