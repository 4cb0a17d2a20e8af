"""The Celery app of this machine's Sluice (its SLUICE_* settings, or the embedded stack), for
stock Celery tools:

    celery -A ops.celery_entry inspect ping
    celery -A ops.celery_entry flower        # or `sluice flower`

Stock clients with only the broker URL work too (`celery --broker URL inspect ping`): Sluice
declares its Redis queues the way kombu does by default."""

from schemas.settings import Settings
from schemas.stack import endpoints
from workers.celery_app import create_app

settings = Settings()
app = create_app(settings, endpoints(settings))
