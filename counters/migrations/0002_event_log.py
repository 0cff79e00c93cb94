"""The event log: one append-only table, range-partitioned by day on event_time.

- No DEFAULT partition: a row outside every partition is an error the write path repairs by
  creating the partition, never a row parked where retention cannot drop it.
- The primary key must contain the partition key, hence (id, event_time).
- (namespace, counter, event_time) INCLUDE (kind, delta, id) serves rollups and accurate reads
  with index-only scans of one counter's tail.
- A BRIN index on event_time serves the stale sweep's time-range scans at almost no cost: rows
  arrive in time order, which is exactly what BRIN summarizes well.
- No foreign keys, so the table can be distributed by counter (Citus) later.
"""

import datetime as dt

from django.db import migrations

CREATE = """
CREATE SEQUENCE counters_event_id_seq AS bigint;
CREATE TABLE counters_event (
    id bigint NOT NULL DEFAULT nextval('counters_event_id_seq'),
    namespace varchar(63) NOT NULL,
    counter varchar(255) COLLATE "C" NOT NULL,
    kind smallint NOT NULL CHECK (kind IN (0, 1)),
    delta bigint NOT NULL,
    event_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, event_time)
) PARTITION BY RANGE (event_time);
ALTER SEQUENCE counters_event_id_seq OWNED BY counters_event.id;
CREATE INDEX counters_event_counter_time ON counters_event (namespace, counter, event_time) INCLUDE (kind, delta, id);
CREATE INDEX counters_event_time_brin ON counters_event USING brin (event_time);
"""

DROP = "DROP TABLE counters_event; "


def create_first_partitions(apps, schema_editor):
    from counters import partitions

    today = dt.datetime.now(dt.UTC).date()
    partitions.ensure_partitions(today - dt.timedelta(days=1), 5)


class Migration(migrations.Migration):
    dependencies = [("counters", "0001_initial")]

    operations = [
        migrations.RunSQL(CREATE, DROP),
        migrations.RunPython(create_first_partitions, migrations.RunPython.noop),
    ]
