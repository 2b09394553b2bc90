"""The native API's pagination: DRF's limit/offset, strict about its two parameters."""

from typing import Any

from rest_framework import pagination
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    """`?limit=` (1 to 1000) and `?offset=` (0 to 10^18), as the schema documents them: a value that is
    not a whole number in range is refused (400 naming it), not replaced by the default nor clamped.
    The offset's bound keeps offset + limit inside the 64-bit integer SQLite and PostgreSQL take."""

    max_limit = 1000
    BOUNDS = {"limit": (1, max_limit), "offset": (0, 10**18)}

    def get_limit(self, request: Request) -> int | None:
        self._check(request, self.limit_query_param)
        return super().get_limit(request)

    def get_offset(self, request: Request) -> int:
        self._check(request, self.offset_query_param)
        return super().get_offset(request)

    def _check(self, request: Request, name: str) -> None:
        raw = request.query_params.get(name)
        low, high = self.BOUNDS[name]
        # The length first: int() of thousands of digits is slow, and refused past 4300 of them.
        if raw is not None and not (raw.isascii() and raw.isdigit() and len(raw) <= 20 and low <= int(raw) <= high):
            raise ValidationError({name: [f"Expected a whole number from {low} to {high}."]})

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["schema"]["minimum"], parameter["schema"]["maximum"] = self.BOUNDS[parameter["name"]]
        return parameters
