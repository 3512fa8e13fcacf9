"""The site's files, where they are and how they are served.

static/ and templates/ live at the repository's root, beside app/, and are packed into the
wheel as rnnscope/static and rnnscope/templates, again beside rnnscope/app (pyproject.toml's
package-dir). Browser libraries come from installed Python packages (Swagger UI, ReDoc) or
are checked in under static/vendor (plotly.js with the pages' trace types), so the site,
/docs and /redoc included, works offline.

Every file under /static is served the same way (issue 19: Plotly is 1.2 MB, 4.8 MB in full):
- gzip when the request accepts it: text formats only, compressed once per process and kept
  in memory (plotly.min.js takes ~0.6 s at level 9, far too long to spend per request; large
  files are compressed in a background thread, and served uncompressed until that is done);
- a strong ETag, the hash of the served bytes, and 304 for an If-None-Match that names it;
- `Cache-Control: immutable` for a year when the URL carries that hash (`?v=`, which pages get
  from static_url), and `no-cache` (reuse after a 304) otherwise, e.g. for the modules a page's
  script imports by relative path, so an edited file is never shown stale.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import mimetypes
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from importlib.util import find_spec
from pathlib import Path
from urllib.parse import parse_qs

from starlette.datastructures import Headers
from starlette.responses import FileResponse, Response
from starlette.staticfiles import NotModifiedResponse, StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

APP_DIR = Path(__file__).resolve().parents[1]          # app/, which this file's web/ is in


def site_dir(name: str) -> Path:
    """The folder beside app/: in the wheel and in the checkout alike."""
    candidate = APP_DIR.parent / name
    if not candidate.is_dir():
        raise FileNotFoundError(f"rnnscope's {name}/ is not beside {APP_DIR}: reinstall the package")
    return candidate


STATIC_DIR = site_dir("static")
TEMPLATES_DIR = site_dir("templates")


def package_dir(name: str) -> Path:
    """An installed package's folder, found without importing it: plotly's import costs
    more than the whole app's."""
    spec = find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{name} is not installed; `pip install .` installs rnnscope's dependencies")
    return Path(spec.submodule_search_locations[0])


# --- the vendored browser libraries: served as /static/vendor/<name> (app/web/vendor.py) ---

VENDOR_URL = "/static/vendor"
PLOTLY_JS = package_dir("plotly") / "package_data" / "plotly.min.js"
# What the pages load: plotly.js with only the trace types they draw (scatter, bar, heatmap), the
# same plotly.js version as plotly.min.js, built by tools/plotly-bundle and checked in under
# static/vendor with its licence. A browser runs a bundle before a page can draw: plotly.min.js
# (4.8 MB, every trace type, maps and 3-D) took 1.5-2 s of CPU, npm's 1.5 MB cartesian bundle
# about 0.7 s, these 1.2 MB about half of that (issue 19; tools/plotly-bundle/README.md).
PLOTLY_PAGES_JS = STATIC_DIR / "vendor" / "plotly-pages.min.js"
# Served name -> the file as its package ships it. fastapi-offline ships Swagger UI 5's and
# ReDoc 2's standalone builds and FastAPI's icon, the files /docs and /redoc would take from a CDN.
VENDOR_FILES = {
    PLOTLY_PAGES_JS.name: PLOTLY_PAGES_JS,      # first: what the first page will ask for
    PLOTLY_JS.name: PLOTLY_JS,
    **{name: package_dir("fastapi_offline") / "static" / name
       for name in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")},
}
# Compressed as the app starts: what the pages and /docs load. (plotly.min.js is still served,
# for links made before the pages moved to their own bundle, and compressed when asked for.)
WARM_AT_START = [path for path in VENDOR_FILES.values() if path != PLOTLY_JS]
# ReDoc 2 draws Redocly's logo beside "API docs by Redocly" from their CDN, with no option to
# leave it out; /redoc's Content-Security-Policy refuses it, which the browser reports as an
# error. The served copy asks for an empty image instead (data: URLs are allowed there).
# (file, bytes to find, replacement); a ReDoc without them is served unchanged.
VENDOR_PATCHES = [
    (VENDOR_FILES["redoc.standalone.js"], b'src:"https://cdn.redoc.ly/redoc/logo-mini.svg"',
     b'src:"data:image/svg+xml,%3Csvg xmlns=%27http://www.w3.org/2000/svg%27/%3E"'),
]


# --- serving ------------------------------------------------------------------------------

# Formats worth compressing; images and fonts are compressed already.
COMPRESSIBLE = frozenset({".js", ".mjs", ".css", ".html", ".svg", ".json", ".txt", ".map"})
MEDIA_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css", ".png": "image/png",
               ".svg": "image/svg+xml", ".json": "application/json"}
# Above this, compression (~150 ms a MB at level 9) runs in a background thread, not in a request.
COMPRESS_INLINE_BYTES = 256 * 1024
GZIP_LEVEL = 9                          # done once per file and process, so the smallest output
VERSION_PARAM = "v"
DIGEST_CHARS = 20                       # of sha256's hex: 80 bits, no two versions of a file alike
IMMUTABLE = "public, max-age=31536000, immutable"    # a year: the URL changes with the content
REVALIDATE = "no-cache"                 # keep, but ask (If-None-Match) before each reuse


@dataclass(frozen=True)
class Asset:
    path: Path
    stamp: tuple[int, int]              # the file's (mtime_ns, size) when read
    digest: str                         # of the served bytes: the ETag and the `?v=` of its URL
    media_type: str
    body: bytes | None                  # the served bytes when they are not the file's (VENDOR_PATCHES)
    compressible: bool
    gzipped: bytes | None = None        # None: not compressible, or not compressed yet


def media_type(path: Path) -> str:
    return MEDIA_TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header admits gzip (`gzip;q=0` refuses it, `*` admits it)."""
    weights = {}
    for part in accept_encoding.lower().split(","):
        name, _, params = part.strip().partition(";")
        weight = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        weights[name.strip()] = weight
    return weights.get("gzip", weights.get("x-gzip", weights.get("*", 0.0))) > 0


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110's weak comparison, as If-None-Match uses it."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    return etag in (tag.strip().removeprefix("W/") for tag in if_none_match.split(","))


class AssetCache:
    """What serving a file needs, read once per file and process: its hash, and its gzip bytes
    (for the pages' Plotly 0.5 MB kept in place of 1.5 MB re-read from disk). The files belong to
    the installation, not to one app, so every app in the process shares one cache; it holds
    one entry per file of static/ and VENDOR_FILES, re-read when a file's mtime or size changes."""

    def __init__(self, patches: Iterable[tuple[Path, bytes, bytes]] = ()):
        self.patches: dict[Path, list[tuple[bytes, bytes]]] = {}
        for path, old, new in patches:
            self.patches.setdefault(path, []).append((old, new))
        self._assets: dict[Path, Asset] = {}
        self._compressing: dict[Path, threading.Event] = {}     # set once the file's gzip is kept
        self._lock = threading.Lock()

    def get(self, path: Path) -> Asset:
        """The file's current Asset, compressed or on its way to be; raises OSError when the
        file cannot be read."""
        asset = self._current(path)
        if asset.compressible and asset.gzipped is None and self._claim(path) is None:
            threading.Thread(target=self._compress, args=(asset,), name="rnnscope-gzip", daemon=True).start()
        return asset

    def warm(self, paths: Iterable[Path]) -> threading.Thread:
        """Read and compress these files, one after the other in a background thread, so the
        first page served already gets them compressed; the thread ends once they all are."""
        def run():
            for path in paths:
                try:
                    asset = self._current(path)
                except OSError:
                    continue                # answered where it is asked for
                if asset.compressible and asset.gzipped is None:
                    busy = self._claim(path)
                    if busy is None:
                        self._compress(asset)
                    else:
                        busy.wait()
        thread = threading.Thread(target=run, name="rnnscope-assets", daemon=True)
        thread.start()
        return thread

    def _current(self, path: Path) -> Asset:
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        asset = self._assets.get(path)
        if asset is None or asset.stamp != stamp:
            asset = self._read(path, stamp)
            self._keep(asset)
        return asset

    def _read(self, path: Path, stamp: tuple[int, int]) -> Asset:
        compressible = path.suffix in COMPRESSIBLE
        patches = self.patches.get(path)
        if compressible or patches:
            data = self._served_bytes(path)
            digest = hashlib.sha256(data).hexdigest()
        else:                               # an image: hashed without holding it
            with path.open("rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
            data = None
        gzipped = None
        if compressible and len(data) <= COMPRESS_INLINE_BYTES:
            gzipped = gzip.compress(data, GZIP_LEVEL, mtime=0)
        return Asset(path, stamp, digest[:DIGEST_CHARS], media_type(path), data if patches else None,
                     compressible, gzipped)

    def _served_bytes(self, path: Path) -> bytes:
        data = path.read_bytes()
        for old, new in self.patches.get(path, ()):
            data = data.replace(old, new)
        return data

    def _keep(self, asset: Asset) -> None:
        """Keep `asset`, but never in place of the same version compressed (a later get()
        reads a file again whose stamp no longer matches)."""
        with self._lock:
            current = self._assets.get(asset.path)
            if current is None or current.stamp != asset.stamp or (
                    current.stamp == asset.stamp and (asset.gzipped is not None or current.gzipped is None)):
                self._assets[asset.path] = asset

    def _claim(self, path: Path) -> threading.Event | None:
        """None: the caller is to compress `path`; else the Event of whoever is at it."""
        with self._lock:
            busy = self._compressing.get(path)
            if busy is None:
                self._compressing[path] = threading.Event()
            return busy

    def _compress(self, asset: Asset) -> None:
        try:
            data = asset.body if asset.body is not None else self._served_bytes(asset.path)
            if hashlib.sha256(data).hexdigest()[:DIGEST_CHARS] == asset.digest:   # unchanged since read
                self._keep(replace(asset, gzipped=gzip.compress(data, GZIP_LEVEL, mtime=0)))
        except OSError:
            pass                            # the next request reads the file again
        finally:
            with self._lock:
                self._compressing.pop(asset.path).set()

    def response(self, path: Path, scope: Scope) -> Response:
        """The file as an HTTP response to the request in `scope`: gzip if accepted and
        ready, 304 if the client holds it, cacheable for a year if the URL names its hash."""
        asset = self.get(path)
        request = Headers(scope=scope)
        use_gzip = asset.gzipped is not None and accepts_gzip(request.get("accept-encoding", ""))
        etag = f'"{asset.digest}{"-gzip" if use_gzip else ""}"'      # one per representation
        versions = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(VERSION_PARAM, [])
        headers = {"etag": etag, "cache-control": IMMUTABLE if versions == [asset.digest] else REVALIDATE}
        if asset.compressible:
            headers["vary"] = "Accept-Encoding"
        if etag_matches(request.get("if-none-match"), etag):
            return NotModifiedResponse(Headers(headers))
        if use_gzip:
            headers["content-encoding"] = "gzip"
            body = asset.gzipped
        elif asset.body is not None:
            body = asset.body
        else:                               # from disk, with Range support
            return FileResponse(path, media_type=asset.media_type, headers=headers)
        if scope.get("method") == "HEAD":
            return Response(b"", media_type=asset.media_type, headers={**headers, "content-length": str(len(body))})
        return Response(body, media_type=asset.media_type, headers=headers)


ASSETS = AssetCache(VENDOR_PATCHES)


def asset_path(name: str) -> Path:
    """The file served as /static/<name>."""
    if name.startswith("vendor/"):
        return VENDOR_FILES[name.removeprefix("vendor/")]
    return STATIC_DIR / name


def static_url(name: str) -> str:
    """/static/<name>?v=<hash of its content>, the URL pages link to: a browser keeps it for a
    year and fetches the file again only when it changes, since the URL changes with it."""
    return f"/static/{name}?{VERSION_PARAM}={ASSETS.get(asset_path(name)).digest}"


MODULE_IMPORT = re.compile(r"""^\s*import\b[^;]*?\bfrom\s+["']\./([\w-]+\.js)["']""", re.M | re.S)


@functools.cache
def module_imports(name: str) -> tuple[str, ...]:
    """The static/js modules that static/js/<name> imports, directly or through others, in the
    order a browser meets them. A page links them as modulepreload, so the browser fetches
    them beside the page's module instead of after it has parsed it (issue 19)."""
    found: list[str] = []

    def visit(module: str) -> None:
        try:
            text = (STATIC_DIR / "js" / module).read_text(encoding="utf-8")
        except OSError:
            return
        for imported in MODULE_IMPORT.findall(text):
            if imported not in found and imported != name:
                found.append(imported)
                visit(imported)

    visit(name)
    return tuple(found)


class AssetFiles(StaticFiles):
    """static/, served as the module docstring says (StaticFiles still finds the file and
    refuses paths that leave the folder)."""

    def file_response(self, full_path, stat_result, scope: Scope, status_code: int = 200) -> Response:
        return ASSETS.response(Path(full_path), scope)


class PagesRevalidated:
    """HTML is made for each request and names the current hash of every file it loads, so a
    browser must ask for it again each time rather than show a stale copy: `no-cache` on every
    text/html response that set no Cache-Control of its own. Headers only; bodies, event
    streams included, pass through untouched."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_revalidated(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", ())
                names = {k.lower(): v for k, v in headers}
                if names.get(b"content-type", b"").startswith(b"text/html") and b"cache-control" not in names:
                    message = {**message, "headers": [*headers, (b"cache-control", REVALIDATE.encode())]}
            await send(message)

        await self.app(scope, receive, send_revalidated)
