"""The web page at ``/``: plain HTML, CSS and JavaScript shipped in the package (``api/web``), no build step.

Every file it loads comes from the service itself (the Content-Security-Policy says so to the
browser), so it works offline. The page holds no data: it calls the same ``/v1`` API with the API
key the user types (kept in the tab's session storage), under the same auth and tenant isolation.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/web"
WEB_DIR = files("api") / "web"
# Scripts, styles and API calls: this origin only. Videos also come from the bucket's presigned URLs
# (another origin) and from the user's own files (blob:); the plot is inline SVG.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob: http: https:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
router = APIRouter(include_in_schema=False)


@router.get("/")
def page() -> FileResponse:
    return FileResponse(
        str(WEB_DIR / "index.html"),
        media_type="text/html",
        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"},
    )


def install(app: FastAPI) -> None:
    """Serve the page at ``/`` and its files under ``/web``."""
    app.mount(ASSETS, StaticFiles(directory=str(WEB_DIR)), name="web-assets")
    app.include_router(router)
