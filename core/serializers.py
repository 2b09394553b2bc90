"""What the native API's serializers share: an unknown field is an error (a typo should say so, not
be dropped), and a JSON body's values have the JSON types the schema gives them. DRF's own fields
also take "5" for a number and 1 for true: the pages rely on that (an HTML form sends only strings),
so the check applies to JSON bodies only."""

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rest_framework import serializers


def json_type(field: serializers.Field) -> tuple[tuple[type[Any], ...], str] | None:
    """(the Python types of the JSON values `field` takes, those types in words), or None for any."""
    if isinstance(field, serializers.BooleanField):
        return (bool,), "true or false"
    if isinstance(field, serializers.IntegerField):
        return (int,), "a whole number"
    if isinstance(field, serializers.FloatField) or (
            isinstance(field, serializers.DecimalField) and not field.coerce_to_string):
        return (int, float), "a number"
    if isinstance(field, (serializers.ListField, serializers.ListSerializer)):
        return (list,), "a list"
    if isinstance(field, (serializers.DictField, serializers.Serializer)):
        return (dict,), "an object"
    if isinstance(field, (serializers.CharField, serializers.ChoiceField, serializers.DateTimeField,
                          serializers.SlugRelatedField)):
        return (str,), "a string"
    return None


def type_problem(field: serializers.Field, value: Any) -> str | None:
    """Why `value` does not have `field`'s JSON type (nor, in a list or dict field, its items theirs),
    or None. A null is the field's own business (allow_null)."""
    expected = json_type(field)
    if value is None or expected is None:
        return None
    types, words = expected
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        return f"Expected {words}."
    if isinstance(field, (serializers.ListField, serializers.DictField)):
        items = value if isinstance(value, list) else value.values()
        return next((f"Each item: {problem}" for item in items if (problem := type_problem(field.child, item))), None)
    return None


if TYPE_CHECKING:  # to the type checker the mixin is the serializer it is mixed into
    from rest_framework.serializers import Serializer as _Mixed
else:
    _Mixed = object


class StrictInput(_Mixed):
    """A serializer mixin (first among the bases): `to_internal_value` refuses unknown fields, and
    values of the wrong JSON type when the input is a JSON request body."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            errors = {name: ["Unknown field."] for name in sorted(set(data) - set(self.fields))}
            if self._from_json():
                for name, value in data.items():
                    field = self.fields.get(name)
                    if field is not None and not field.read_only and (problem := type_problem(field, value)):
                        errors[name] = [problem]
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)

    def _from_json(self) -> bool:
        request = self.context.get("request")
        return request is not None and request.content_type.partition(";")[0].strip() == "application/json"

