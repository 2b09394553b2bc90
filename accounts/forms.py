from django import forms

from .models import ROLES, ApiKey, Team


class LoginForm(forms.Form):
    username = forms.CharField(
        max_length=150, widget=forms.TextInput(attrs={"autofocus": True, "autocomplete": "username"}),
    )
    password = forms.CharField(
        max_length=1024, strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )
    otp = forms.CharField(
        label="Authentication code", max_length=12, required=False,
        help_text="Only if you enrolled an authenticator app.",
        widget=forms.TextInput(attrs={
            "inputmode": "numeric", "autocomplete": "one-time-code", "placeholder": "123456",
        }),
    )


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100, widget=forms.TextInput(attrs={"placeholder": "e.g. chat-frontend"}))
    scopes = forms.MultipleChoiceField(
        choices=[(scope, scope) for scope in ApiKey.SCOPES], widget=forms.CheckboxSelectMultiple, initial=["inference"]
    )
    expires_in_days = forms.IntegerField(
        min_value=1, max_value=3650, required=False, label="Expires in (days)", help_text="Empty: never expires."
    )
    team = forms.ModelChoiceField(
        queryset=Team.objects.none(), to_field_name="name", required=False, empty_label="none: your own key",
        help_text="Its usage counts for the team.",
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = user.teams.all()


class TeamForm(forms.Form):
    name = forms.SlugField(max_length=50, help_text="Letters, digits, hyphens, underscores.",
                           widget=forms.TextInput(attrs={"placeholder": "e.g. ml-research"}))
    description = forms.CharField(max_length=300, required=False)


class UserCreateForm(forms.Form):
    username = forms.RegexField(regex=r"^[\w.@+-]+$", max_length=150)
    email = forms.EmailField(required=False)
    role = forms.ChoiceField(choices=[(role, role) for role in ROLES], initial="viewer")
    password = forms.CharField(min_length=8, max_length=1024, strip=False, widget=forms.PasswordInput)


class AuditFilterForm(forms.Form):
    actor = forms.CharField(required=False, max_length=200)
    action = forms.CharField(
        required=False, max_length=100, widget=forms.TextInput(attrs={"placeholder": "engine.update or engine"}),
    )
    target = forms.CharField(required=False, max_length=300)
    since = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    until = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
