from django import forms

from accounts.models import ApiKey, Team, User

from .models import Budget


def _targets():
    """The choices of whom a budget may count: every API key, user and team, as "<scope>:<id>"."""
    keys = [(f"key:{key.pk}", f"{key.name} ({key.prefix}…, {key.user.username})")
            for key in ApiKey.objects.select_related("user").order_by("name")]
    users = [(f"user:{pk}", name) for pk, name in User.objects.order_by("username").values_list("pk", "username")]
    teams = [(f"team:{pk}", name) for pk, name in Team.objects.order_by("name").values_list("pk", "name")]
    return [("", "—"), ("API keys", keys), ("Users", users), ("Teams", teams)]


class BudgetForm(forms.ModelForm):
    """The page's budget form: whom it counts picked from a list (the API takes scope and target_id);
    the model's rules apply as they do to the API (the services check them)."""

    target = forms.ChoiceField(label="Counts the requests of", help_text="An API key, a user (all their keys and "
                               "playground requests) or a team (its keys).")

    class Meta:
        model = Budget
        fields = ["name", "metric", "period", "limit", "soft_limit", "enabled"]
        widgets = {"name": forms.TextInput(attrs={"placeholder": "e.g. team-research-monthly"})}
        help_texts = {"limit": "Requests over it are refused (429 budget_exceeded) until the period resets."}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["target"].choices = _targets()
        if self.instance.pk:
            self.fields["target"].initial = f"{self.instance.scope}:{self.instance.target_id}"

    def clean_target(self):
        scope, _, target_id = self.cleaned_data["target"].partition(":")
        return scope, int(target_id)

    def budget_fields(self):
        """The cleaned fields as the services take them."""
        fields = {name: value for name, value in self.cleaned_data.items() if name != "target"}
        fields["scope"], fields["target_id"] = self.cleaned_data["target"]
        return fields

    def _update_errors(self, errors):
        # The model names scope and target_id; the form has one field for both.
        for name in ("scope", "target_id"):
            if hasattr(errors, "error_dict") and name in errors.error_dict:
                errors.error_dict.setdefault("target", []).extend(errors.error_dict.pop(name))
        super()._update_errors(errors)

    def _post_clean(self):
        if "target" in self.cleaned_data:
            self.instance.scope, self.instance.target_id = self.cleaned_data["target"]
        super()._post_clean()
