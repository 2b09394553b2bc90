"""`/api/usage/` (usage summed by period and group: everyone their own, admins everyone's) and
`/api/usage/prices/` (operators set an engine's price; every change audited)."""

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, viewsets
from rest_framework.decorators import api_view, permission_classes
from rest_framework.response import Response

from accounts.audit import Actor
from accounts.permissions import ScopePermission

from . import budgets, selectors, services
from .models import Budget, Price
from .serializers import BudgetSerializer, PriceSerializer, UsageQuery


class PriceViewSet(viewsets.ModelViewSet):
    """Engines' prices, by engine name. A change applies to usage stored after it: stored records keep
    their cost."""

    queryset = Price.objects.all()
    serializer_class = PriceSerializer
    lookup_field = "engine"
    lookup_value_regex = "[^/]+"

    def perform_create(self, serializer):
        serializer.instance = services.price_create(actor=Actor.from_request(self.request), **serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = services.price_update(actor=Actor.from_request(self.request), price=serializer.instance,
                                                    **serializer.validated_data)

    def perform_destroy(self, instance):
        services.price_delete(actor=Actor.from_request(self.request), price=instance)


class BudgetViewSet(viewsets.ModelViewSet):
    """Budgets on keys, users and teams (admins change them; operators read them). Requests over a
    hard limit are refused with 429 `budget_exceeded`; a soft limit reached fires an alert
    (docs/usage.md)."""

    queryset = Budget.objects.all()
    serializer_class = BudgetSerializer
    lookup_value_regex = "[0-9]+"

    def get_serializer_context(self):
        context = super().get_serializer_context()
        if self.action == "list":  # every budget's standing in one Redis round trip
            context["standing"] = budgets.standing(list(self.get_queryset()))
        return context

    def perform_create(self, serializer):
        serializer.instance = services.budget_create(actor=Actor.from_request(self.request),
                                                     **serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = services.budget_update(actor=Actor.from_request(self.request),
                                                     budget=serializer.instance, **serializer.validated_data)

    def perform_destroy(self, instance):
        services.budget_delete(actor=Actor.from_request(self.request), budget=instance)


@extend_schema(parameters=[UsageQuery], responses=inline_serializer("Usage", {
    "period": serializers.CharField(), "group_by": serializers.CharField(), "since": serializers.DateTimeField(),
    "until": serializers.DateTimeField(),
    "series": serializers.ListField(child=serializers.DictField(), help_text="{start, group, currency, sums}"),
    "totals": serializers.ListField(child=serializers.DictField(), help_text="{group, currency, sums}, most first"),
}))
@api_view(["GET"])
@permission_classes([ScopePermission])
def usage(request):
    """Usage summed per hour or day and per engine, route, kind, user, API key or team. Admins see
    everyone's (and may narrow to one user); everyone else their own."""
    query = UsageQuery(data=request.query_params.dict())
    query.is_valid(raise_exception=True)
    wanted = query.validated_data
    # Everyone else's own usage only, whatever they ask.
    user = wanted.get("user") if request.user.has_perm("usage.view_all_usage") else request.user.pk
    return Response(selectors.usage(period=wanted["period"], group_by=wanted["group_by"], since=wanted.get("since"),
                                    until=wanted.get("until"), user=user))
