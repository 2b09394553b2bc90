from django import forms

from .models import RateLimitPolicy


class RateLimitPolicyForm(forms.ModelForm):
    """The page's policy form: the model's validators and `clean()`, as the API applies them."""

    class Meta:
        model = RateLimitPolicy
        fields = [
            "name", "scope", "endpoint", "algorithm", "limit", "period_seconds",
            "burst", "action", "max_delay", "enabled",
        ]
        widgets = {
            "name": forms.TextInput(attrs={"placeholder": "e.g. chat-per-key"}),
            "endpoint": forms.TextInput(attrs={"placeholder": "/v1/  (blank: every path)"}),
            "max_delay": forms.NumberInput(attrs={"step": "0.1", "min": "0"}),
        }
