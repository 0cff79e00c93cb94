"""Chunked request bodies on /api/ paths, which Django would otherwise read as empty."""

from __future__ import annotations

from io import BytesIO

from django.conf import settings
from django.http import JsonResponse

from counters.api.errors import envelope


def read_terminated(stream, limit: int) -> bytes:
    """Up to ``limit`` bytes of a stream the server ends at the body's end (reads may be short)."""
    chunks, size = [], 0
    while size < limit:
        chunk = stream.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


class ChunkedBodyMiddleware:
    """Buffers a ``Transfer-Encoding: chunked`` body of at most ``DATA_UPLOAD_MAX_MEMORY_SIZE`` bytes
    and hands it to Django as a body of known length; a longer one is a 413 envelope.

    Django reads CONTENT_LENGTH bytes and nothing without it, ignoring ``wsgi.input_terminated``,
    the flag by which a server (gunicorn sets it) promises that reading ``wsgi.input`` to its end
    is safe. Without that flag the body stays unread, as before.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        meta = request.META
        if (
            request.path.startswith("/api/")
            and not meta.get("CONTENT_LENGTH")
            and "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower()
            and meta.get("wsgi.input_terminated")
        ):
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            body = read_terminated(meta["wsgi.input"], limit + 1)
            if len(body) > limit:
                return JsonResponse(
                    envelope("payload_too_large", f"The body is larger than {limit} bytes.", {"limit": limit}),
                    status=413,
                )
            meta["CONTENT_LENGTH"] = str(len(body))
            # WSGIRequest made its stream from CONTENT_LENGTH when it was built; this is the state
            # HttpRequest.body itself leaves behind after buffering a body.
            request._stream = BytesIO(body)
        return self.get_response(request)
