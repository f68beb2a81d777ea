"""The bench routes on Django in one module (WSGI, served by gunicorn as django_app:application)."""

from django.conf import settings

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["127.0.0.1", "localhost", "[::1]"],
    ROOT_URLCONF=__name__,
    SECRET_KEY="bench-only-not-a-secret",
    MIDDLEWARE=[],  # no sessions, CSRF or auth: the bench routes need none
    INSTALLED_APPS=[],
    USE_TZ=True,
)

import django  # noqa: E402 - settings first

django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpResponse, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402
from django.views.decorators.http import require_GET, require_POST  # noqa: E402


@require_GET
def plaintext(request):
    return HttpResponse("Hello, World!", content_type="text/plain")


@require_GET
def json_(request):
    return JsonResponse({"message": "Hello, World!"})


@require_GET
def user(request, uid):
    return JsonResponse({"id": uid, "name": f"user-{uid}"})


@require_POST
def echo_body(request):
    return HttpResponse(request.body, content_type="application/octet-stream")


@require_GET
def healthz(request):
    return HttpResponse("ok", content_type="text/plain")


urlpatterns = [
    path("plaintext", plaintext),
    path("json", json_),
    path("users/<int:uid>", user),
    path("echo-body", echo_body),
    path("healthz", healthz),
]

application = get_wsgi_application()
