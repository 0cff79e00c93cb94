"""``counters_require(ok, message)``: fails the statement that calls it (SQLSTATE CR001) unless
``ok``. The write path's one-statement transaction uses it to roll itself back when a token turns
out to be a replay, so the request can be redone where replays and reuses are told apart."""

from django.db import migrations

CREATE = """
CREATE FUNCTION counters_require(ok boolean, message text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF NOT ok THEN
        RAISE EXCEPTION '%', message USING ERRCODE = 'CR001';
    END IF;
    RETURN true;
END
$$
"""


class Migration(migrations.Migration):
    dependencies = [("counters", "0004_event_clears_index")]

    operations = [migrations.RunSQL(CREATE, "DROP FUNCTION counters_require(boolean, text)")]
