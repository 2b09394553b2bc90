from django.urls import path

from engines.openai import views as openai_api

urlpatterns = [
    path("models", openai_api.models, name="v1-models"),
    path("chat/completions", openai_api.chat_completions, name="v1-chat"),
    path("completions", openai_api.completions, name="v1-completions"),
    path("embeddings", openai_api.embeddings, name="v1-embeddings"),
    path("images/generations", openai_api.image_generations, name="v1-images"),
    path("images/edits", openai_api.image_edits, name="v1-image-edits"),
]
