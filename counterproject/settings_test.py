"""Test settings: the same servers as development, but Redis database 15 so tests never touch live data."""

from counterproject.settings import *  # noqa: F403
from counterproject.settings import COUNTERS, REDIS_URL, broker_url, redis_url_with_db

COUNTERS = {**COUNTERS, "REDIS_DB": 15}
CELERY_BROKER_URL = broker_url(redis_url_with_db(REDIS_URL, 14))
