"""The native API's pagination: DRF's limit/offset, strict about its two parameters."""

from rest_framework import pagination
from rest_framework.exceptions import ValidationError


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    """`?limit=` (1 or more) and `?offset=` (0 or more), as the schema documents them: a value that is
    not a whole number in range is refused (400 naming it), not silently replaced by the default."""

    MINIMUM = {"limit": 1, "offset": 0}

    def get_limit(self, request):
        self._check(request, self.limit_query_param)
        return super().get_limit(request)

    def get_offset(self, request):
        self._check(request, self.offset_query_param)
        return super().get_offset(request)

    def _check(self, request, name):
        raw = request.query_params.get(name)
        if raw is not None and not (raw.isascii() and raw.isdigit() and int(raw) >= self.MINIMUM[name]):
            raise ValidationError({name: [f"Expected a whole number from {self.MINIMUM[name]} up."]})

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["schema"]["minimum"] = self.MINIMUM[parameter["name"]]
        return parameters
