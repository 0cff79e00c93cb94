"""Test settings: the same servers as development, but their own Redis database and PostgreSQL
test database, so tests never touch live data. COUNTER_TEST_REDIS_DB / COUNTER_TEST_DB let two
suites share one server without sharing state."""

import os

from counterproject.settings import *  # noqa: F403
from counterproject.settings import COUNTERS, DATABASES, REDIS_URL, broker_url, envint, redis_url_with_db

COUNTERS = {**COUNTERS, "REDIS_DB": envint("COUNTER_TEST_REDIS_DB", "15")}
CELERY_BROKER_URL = broker_url(redis_url_with_db(REDIS_URL, 14))
DATABASES["default"]["TEST"] = {"NAME": os.environ.get("COUNTER_TEST_DB", "test_counters")}
