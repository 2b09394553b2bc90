from django import forms


class IpBlockForm(forms.Form):
    network = forms.CharField(
        max_length=64, widget=forms.TextInput(attrs={"placeholder": "203.0.113.7 or 203.0.113.0/24"}),
    )
    reason = forms.CharField(max_length=300)
    expires_in_hours = forms.IntegerField(
        min_value=1, max_value=24 * 365, required=False,
        label="Expires in (hours)", help_text="Empty: until unblocked.",
    )
