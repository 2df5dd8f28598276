"""The Litestar application factory: every domain's routes behind the edge security layers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from litestar import Litestar
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template import TemplateConfig

from appliance import __version__
from appliance.accounts.admin_web import StaffAdminController
from appliance.accounts.web import AccountController, LinkController, SignInController
from appliance.audit.web import AuditController
from appliance.backups.web import BackupsController
from appliance.clients.web import ClientController
from appliance.clock import Clock, utcnow
from appliance.config import Settings, ensure_secret_key
from appliance.db.engine import configure, connection_pool
from appliance.exports.web import ExportController, ExportDownloadController
from appliance.galleries.media_web import ShareMediaController, StaffMediaController
from appliance.galleries.page_cache import PageCache
from appliance.galleries.share_staff_web import ShareLinkController
from appliance.galleries.share_web import ShareController
from appliance.galleries.upload_web import UploadController
from appliance.galleries.web import GalleryController
from appliance.monitoring.admin_web import MonitoringAdminController
from appliance.monitoring.incidents_web import IncidentAdminController
from appliance.monitoring.metrics_web import MetricsController
from appliance.monitoring.status_web import StatusController
from appliance.monitoring.watcher import watch_worker
from appliance.monitoring.web import HealthController
from appliance.notify.web import NotifyAdminController
from appliance.policies.web import PolicyAdminController, PrivacyPolicyController
from appliance.privacy.erasure_web import ErasureController
from appliance.privacy.web import SecurityIncidentController
from appliance.privacy_requests.web import ClientPrivacyController, PrivacyRequestAdminController
from appliance.setup.web import SetupController, StudioSettingsController
from appliance.storage import open_store
from appliance.web.csrf import csrf_guard
from appliance.web.pages import EXCEPTION_HANDLERS, load_maintenance_banner
from appliance.web.security import (
    TrustedProxies,
    allowed_hosts,
    forwarded_for,
    security_headers,
)

__all__ = ["create_app"]

WEB_DIR = Path(__file__).parent / "web"
# Forms only for now; uploads go straight to the object store, never through this limit.
MAX_BODY_BYTES = 1024 * 1024


def create_app(settings: Settings, *, clock: Clock = utcnow) -> Litestar:
    """Build the app for ``settings``; ``settings.database.url`` must already be resolved."""
    if not settings.database.url:
        raise ValueError("create_app needs settings.database.url (the CLI resolves it)")
    configure(settings.database.url, pool_max_size=settings.database.pool_max_size)

    store = open_store(settings)

    @contextlib.asynccontextmanager
    async def database(_: Litestar) -> AsyncIterator[None]:
        async with connection_pool():
            await store.ensure_ready()
            # The web process watches the worker's heartbeat: a dead worker cannot say so.
            async with watch_worker(settings, clock):
                yield

    app = Litestar(
        route_handlers=[
            HealthController,
            SetupController,
            SignInController,
            AccountController,
            LinkController,
            StaffAdminController,
            StudioSettingsController,
            AuditController,
            BackupsController,
            NotifyAdminController,
            MonitoringAdminController,
            IncidentAdminController,
            SecurityIncidentController,
            ErasureController,
            PrivacyRequestAdminController,
            PolicyAdminController,
            PrivacyPolicyController,
            StatusController,
            MetricsController,
            ClientController,
            ExportController,
            ExportDownloadController,
            GalleryController,
            UploadController,
            StaffMediaController,
            ShareLinkController,
            ShareController,
            ClientPrivacyController,
            ShareMediaController,
            create_static_files_router(
                path="/static",
                directories=[WEB_DIR / "static"],
                name="static",
                send_as_attachment=False,
            ),
        ],
        lifespan=[database],
        state=State(
            {
                "settings": settings,
                "clock": clock,
                "secret_key": ensure_secret_key(settings),
                "store": store,
                "page_cache": PageCache(),
                "zip_slots": {},  # share link id -> ZIP downloads running in this process
            }
        ),
        guards=[csrf_guard],
        # Reloads the maintenance banner's windows when older than 30 s; never raises.
        before_request=load_maintenance_banner,
        exception_handlers=EXCEPTION_HANDLERS,
        template_config=TemplateConfig(directory=WEB_DIR / "templates", engine=JinjaTemplateEngine),
        openapi_config=OpenAPIConfig(
            title="Fotostudio Appliance",
            version=__version__,
            path="/schema",
            render_plugins=[JsonRenderPlugin()],
        ),
        # Insecure or leaky framework defaults, each set explicitly (and asserted in tests).
        debug=False,
        pdb_on_exception=False,  # never drop into a debugger on a server, whatever the env says
        cors_config=None,
        csrf_config=None,  # replaced by csrf_guard, which also covers the sign-in forms
        request_max_body_size=MAX_BODY_BYTES,
    )
    # The edge layers wrap the app's whole ASGI handler, not its routes: Litestar's middleware
    # list only runs for matched routes, so a 404 or 405 would go out without the security
    # headers, and an unknown Host would be answered instead of refused.
    edge = allowed_hosts(settings.server.allowed_hosts)(app.asgi_handler)
    edge = security_headers(edge)
    app.asgi_handler = forwarded_for(TrustedProxies(settings.server.trusted_proxies))(edge)
    return app
