"""``internlocal web``: the terminal UI served to browsers (textual-serve), one app process per browser session.

textual-serve (aiohttp) runs ``internlocal tui`` for each websocket a browser opens and relays its screen to
xterm.js in the page; every session works on the same data directory (``INTERNLOCAL_HOME`` is inherited). Its
JavaScript and fonts come from the package: the page's one CDN reference (Google Fonts' Roboto Mono stylesheet) is
replaced by the bundled font files, so nothing is fetched from outside this server.

Loopback by default. Any other address needs a token; with a token every request carries it: ``?token=…`` on the
first page load (answered with a cookie and a redirect to the same page without it), then the cookie (or an
``Authorization: Bearer`` header). Without a token the server answers only requests addressed to a loopback name
(DNS rebinding), and the websocket only from its own page's origin (another site's page cannot drive the app).
"""

from __future__ import annotations

from typing import Annotated

import typer

from internlocal.i18n import _

TOKEN_ENV = "INTERNLOCAL_WEB_TOKEN"


def web(
    host: Annotated[str, typer.Option(help=_("Address to bind; anything but loopback needs --token."))] = "127.0.0.1",
    port: Annotated[int, typer.Option(help=_("Port."))] = 8001,
    token: Annotated[
        str | None,
        typer.Option(envvar=TOKEN_ENV, help=_("Token every request must carry (the URL printed at start has it).")),
    ] = None,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help=_("Show the web server's request log and its libraries' warnings.")),
    ] = False,
) -> None:
    # its --help is where main.py registers it
    import logging

    from internlocal.errors import UserError
    from internlocal.server.serve import check_port, is_loopback

    token = token or None  # an empty variable is no token
    if not is_loopback(host) and not token:
        raise UserError(
            _(
                "Serving the app on {host} lets anyone who reaches this machine use it; "
                "set --token (or {variable}), or bind 127.0.0.1."
            ).format(host=host, variable=TOKEN_ENV)
        )
    if verbose:
        from internlocal.logs import configure

        configure(verbose=True)  # the app processes inherit INTERNLOCAL_LOG too
    quiet = logging.getLogger().getEffectiveLevel() > logging.INFO
    # asyncio's child watcher may note a session process that the kernel reaped first ("Unknown child process
    # pid"): harmless, and noise to the user like the servers' own logs
    for name in ("aiohttp", "textual-serve", "asyncio"):
        logging.getLogger(name).setLevel(logging.ERROR if quiet else logging.INFO)
    check_port(host, port)

    from aiohttp import web as aioweb

    server = _make_server(host, port, token)
    url = f"http://{_url_host(host)}:{port}/" + (f"?token={token}" if token else "")

    def ready(*__: object) -> None:
        typer.echo(_("internlocal in the browser at {url}  (Ctrl-C stops)").format(url=url))
        if host in ("0.0.0.0", "::"):
            typer.echo(_("(listening on every address: use this machine's name or address instead of the one shown)"))

    aioweb.run_app(
        server.make_app(),
        host=host,
        port=port,
        print=ready,
        access_log=None if quiet else logging.getLogger("aiohttp.access"),
        shutdown_timeout=5,
    )


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def app_command() -> str:
    """The shell command textual-serve runs per session: this Python's ``internlocal tui``."""
    import shlex
    import sys
    from pathlib import Path

    script = Path(sys.executable).with_name("internlocal")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "internlocal.cli.entry"]
    return "exec " + shlex.join([*argv, "tui"])  # exec: the app is the server's own child, stopped with it


def page_template() -> str:
    """textual-serve's page with its Google Fonts stylesheet replaced by the bundled Roboto Mono files, and the
    terminal opened once those fonts have loaded (xterm.js measures its cells when it opens)."""
    import re
    from pathlib import Path

    import textual_serve

    page = (Path(textual_serve.__file__).parent / "templates" / "app_index.html").read_text(encoding="utf-8")
    fonts = """<style>
      @font-face {
        font-family: "Roboto Mono"; font-style: normal; font-weight: 100 700;
        src: url("{{ config.static.url }}fonts/RobotoMono-VariableFont_wght.ttf") format("truetype");
      }
      @font-face {
        font-family: "Roboto Mono"; font-style: italic; font-weight: 100 700;
        src: url("{{ config.static.url }}fonts/RobotoMono-Italic-VariableFont_wght.ttf") format("truetype");
      }
    </style>"""
    page, replaced = re.subn(r"<link[^>]*fonts\.googleapis\.com[^>]*>", lambda __: fonts, page, flags=re.S)
    if not replaced:  # a textual-serve that no longer links Google Fonts: declare the bundled ones anyway
        page = page.replace("</head>", fonts + "\n  </head>", 1)
    wait_for_fonts = """<script>
      (function () {
        const open = window.onload;  // textual.js opens the terminal on load
        window.onload = (event) => {
          const loads = document.fonts
            ? Promise.all(["16px 'Roboto Mono'", "bold 16px 'Roboto Mono'"].map((f) => document.fonts.load(f)))
            : Promise.resolve();
          loads.catch(() => null).then(() => open && open(event));
        };
      })();
    </script>"""
    script = re.search(r"<script[^>]*textual\.js[^>]*></script>", page)
    if script is not None:
        page = page[: script.end()] + "\n    " + wait_for_fonts + page[script.end() :]
    return page


def _make_server(host: str, port: int, token: str | None):
    """A textual-serve ``Server`` with the page made offline, the token checked, and sessions ended on shutdown."""
    import asyncio
    import contextlib
    import hmac
    import logging

    import aiohttp_jinja2
    import jinja2
    from aiohttp import WSMsgType
    from aiohttp import web as aioweb
    from textual_serve.app_service import AppService
    from textual_serve.server import Server, to_int

    from internlocal.server.serve import is_loopback

    log = logging.getLogger("textual-serve")
    cookie = f"internlocal_web_{port}"  # per port: two servers on one host keep their own tokens

    def carries(given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(given.encode(), token.encode())  # type: ignore[union-attr]

    def host_name(value: str) -> str:
        value = value.strip()
        if value.startswith("["):  # [::1]:8001
            return value[1 : value.find("]")]
        return value.rsplit(":", 1)[0] if value.count(":") == 1 else value

    @aioweb.middleware
    async def guard(request: aioweb.Request, handler):
        websocket = request.headers.get("Upgrade", "").lower() == "websocket"
        origin = request.headers.get("Origin")
        if websocket and origin and origin.split("://", 1)[-1].rstrip("/").lower() != request.host.lower():
            # another site's page must not drive the app (the browser sends its origin; the Host is ours)
            return aioweb.Response(status=403, text=_("This websocket is for pages from this server only.") + "\n")
        if token is None:
            if not is_loopback(host_name(request.host)):  # a DNS name rebound to 127.0.0.1
                return aioweb.Response(status=403, text=_("This server answers requests to localhost only.") + "\n")
            return await handler(request)
        if carries(request.query.get("token")):
            if websocket or request.method != "GET":
                return await handler(request)
            rest = request.rel_url.query.copy()
            rest.popall("token")
            response = aioweb.Response(status=302, headers={"Location": str(request.rel_url.with_query(rest))})
            response.set_cookie(cookie, token, httponly=True, samesite="Strict", path="/")
            return response
        bearer = request.headers.get("Authorization", "")
        if carries(request.cookies.get(cookie)) or (bearer.startswith("Bearer ") and carries(bearer[7:])):
            return await handler(request)
        return aioweb.Response(
            status=401,
            text=_("This internlocal web server needs its token: open the URL it printed (…/?token=…).") + "\n",
        )

    class WebServer(Server):
        def __init__(self) -> None:
            super().__init__(app_command(), host=host, port=port, title="internlocal")
            self.sessions: set[AppService] = set()

        def make_app(self) -> aioweb.Application:
            app = aioweb.Application(middlewares=[guard])
            aiohttp_jinja2.setup(app, loader=jinja2.DictLoader({"app_index.html": page_template()}))
            app.add_routes(
                [
                    aioweb.get("/", self.handle_index, name="index"),
                    aioweb.get("/ws", self.handle_websocket, name="websocket"),
                    aioweb.get("/download/{key}", self.handle_download, name="download"),
                    aioweb.static("/static", self.statics_path, name="static"),
                ]
            )
            app.on_shutdown.append(self.end_sessions)
            return app

        async def handle_index(self, request: aioweb.Request) -> aioweb.Response:
            """The page, with URLs relative to the address the browser used (not the bind address)."""
            scheme = "wss" if request.secure else "ws"
            context = {
                "font_size": to_int(request.query.get("fontsize", "16"), 16),
                "app_websocket_url": f"{scheme}://{request.host}/ws",
                "config": {"static": {"url": "/static/"}},
                "application": {"name": self.title},
            }
            return aiohttp_jinja2.render_template("app_index.html", request, context)

        async def handle_websocket(self, request: aioweb.Request) -> aioweb.WebSocketResponse:
            """textual-serve's session, remembered so that shutting down ends its app process."""
            websocket = aioweb.WebSocketResponse(heartbeat=15)
            width = to_int(request.query.get("width", "80"), 80)
            height = to_int(request.query.get("height", "24"), 24)
            await websocket.prepare(request)

            async def close() -> None:
                await websocket.close()

            session = AppService(
                self.command,
                write_bytes=websocket.send_bytes,
                write_str=websocket.send_str,
                close=close,
                download_manager=self.download_manager,
                debug=self.debug,
            )
            self.sessions.add(session)
            try:
                await session.start(width, height)
                if session._task is not None:  # the app ended (quit, crashed): the page says "Session ended"
                    session._task.add_done_callback(lambda __: asyncio.ensure_future(close()))
                async for message in websocket:
                    if message.type != WSMsgType.TEXT:
                        continue
                    kind, *data = message.json()
                    if kind == "stdin":
                        await session.send_bytes(data[0].encode("utf-8"))
                    elif kind == "resize":
                        await session.set_terminal_size(data[0]["width"], data[0]["height"])
                    elif kind == "ping":
                        await websocket.send_json(["pong", data[0]])
                    elif kind == "blur":
                        await session.blur()
                    elif kind == "focus":
                        await session.focus()
            except Exception:
                log.exception("the browser session failed")
            finally:
                await self.end(session)
                with contextlib.suppress(Exception):
                    await websocket.close()
            return websocket

        async def end(self, session: AppService, grace_s: float = 5.0) -> None:
            """Ask the session's app to quit; kill it if it has not within ``grace_s``."""
            if session not in self.sessions:
                return
            self.sessions.discard(session)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(session.stop(), grace_s)
            process = session._process
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(process.wait(), grace_s)

        async def end_sessions(self, __: aioweb.Application) -> None:
            await asyncio.gather(*(self.end(s) for s in list(self.sessions)), return_exceptions=True)

    return WebServer()
