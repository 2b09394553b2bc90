from django.urls import path

from . import views

urlpatterns = [
    path("login/", views.login_view, name="login"),
    path("logout/", views.logout_view, name="logout"),
    path("account/", views.account, name="account"),
    path("account/password/", views.password_change, name="password_change"),
    path("account/mfa/enrol/", views.mfa_enrol, name="mfa_enrol"),
    path("account/mfa/confirm/", views.mfa_confirm, name="mfa_confirm"),
    path("account/mfa/disable/", views.mfa_disable, name="mfa_disable"),
    path("keys/", views.api_keys, name="api_keys"),
    path("keys/<int:pk>/revoke/", views.api_key_revoke, name="api_key_revoke"),
    path("audit/", views.audit_log, name="audit"),
    path("users/", views.users, name="users"),
    path("users/<int:pk>/", views.user_update, name="user_update"),
    path("roles/<str:role>/policy/", views.role_policy, name="role_policy"),
    path("teams/", views.teams, name="teams"),
    path("teams/<slug:name>/", views.team_edit, name="team_edit"),
    path("teams/<slug:name>/delete/", views.team_delete, name="team_delete"),
    path("teams/<slug:name>/members/", views.team_member_add, name="team_member_add"),
    path("teams/<slug:name>/members/<str:username>/remove/", views.team_member_remove, name="team_member_remove"),
]
