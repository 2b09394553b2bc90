from django.urls import path
from rest_framework.routers import SimpleRouter

from . import api, views

app_name = "usage"

router = SimpleRouter(trailing_slash="/?")
router.register("api/usage/prices", api.PriceViewSet, basename="api-price")
router.register("api/usage/budgets", api.BudgetViewSet, basename="api-budget")

urlpatterns = [
    path("usage/", views.usage_page, name="page"),
    path("usage/export.csv", views.usage_csv, name="export"),
    path("usage/budgets/", views.budgets_page, name="budgets"),
    path("usage/budgets/new/", views.budget_create, name="budget-create"),
    path("usage/budgets/<int:pk>/", views.budget_edit, name="budget-edit"),
    path("usage/budgets/<int:pk>/toggle/", views.budget_toggle, name="budget-toggle"),
    path("usage/budgets/<int:pk>/delete/", views.budget_delete, name="budget-delete"),
    path("api/usage/", api.usage, name="api-usage"),
    *router.urls,
]
