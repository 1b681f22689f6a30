"""The PostgreSQL tables of `PostgresStore`, their versions, and every statement it runs.

Two tables in one schema (the connection's current schema, or the one given):

    qtasks_mp_meta    key -> value: 'schema_version'
    qtasks_mp_tasks   one row per task; `uuid` is the key, `seq` the arrival order
                      (a task put back for a retry gets a new one, like the memory store)

Partial indexes keep each question the store asks a short index walk, whatever the
table holds (the same cut as the SQLite store's):

    tasks_ready     (lane, priority, seq)  status 'new', eta 0   -> take()
    tasks_delayed   (lane, eta)            status 'new', eta > 0 -> take(), next_eta()
    tasks_leased    (lease_owner)          status 'process'      -> renew, reclaim
    tasks_finished  (finished_at)          finished statuses     -> retention
    tasks_seq       (seq)                  every row             -> the dashboard's pages
    tasks_unique    UNIQUE (task_name, unique_key)  key given, new/process -> put_unique()
    tasks_named     (task_name, priority, seq)      status 'new', eta 0 -> rate-limited take()

and `qtasks_mp_rates` (task_name -> next_at): when a rate-limited task may next start.

Times are float seconds since the epoch (`time.time()` of the process that wrote them),
except leases: `lease_until` is on the *server's* clock, so hosts whose clocks disagree
never take each other's tasks early.

The schema is created by the first store that opens the database, under an advisory
lock (two processes starting at once create it once). A later version upgrades in place
from the version it finds (`Statements.steps`, each additive); a database written by a
newer version is refused.
"""

from __future__ import annotations

SCHEMA_VERSION = 2

META = "qtasks_mp_meta"
TASKS = "qtasks_mp_tasks"
RATES = "qtasks_mp_rates"

#: The server's clock, in the unit of every time column.
SERVER_NOW = "extract(epoch from clock_timestamp())::float8"

FINISHED_SQL = "status IN ('success', 'error', 'cancel')"  # matches tasks_finished's WHERE

COLUMNS = (
    "seq, uuid, task_name, lane, status, priority, eta, retry, created_at, updated_at, "
    "started_at, finished_at, args, result, traceback, unique_key, progress, headers"
)


def quote(name: str) -> str:
    """`name` as a quoted SQL identifier (a schema name given by the user)."""
    return '"' + name.replace('"', '""') + '"'


class Statements:
    """Every SQL text the store runs, for tables in `schema` (already quoted)."""

    def __init__(self, schema: str) -> None:
        t = f"{schema}.{TASKS}"
        m = f"{schema}.{META}"
        self.tasks, self.meta = t, m
        self.create = [
            f"CREATE TABLE IF NOT EXISTS {m} (key text PRIMARY KEY, value text NOT NULL)",
            f"""CREATE TABLE {t} (
                uuid uuid PRIMARY KEY,
                seq bigserial NOT NULL,
                task_name text NOT NULL,
                lane text NOT NULL,
                status text NOT NULL,
                priority bigint NOT NULL,
                eta float8 NOT NULL,
                retry integer NOT NULL,
                created_at float8 NOT NULL,
                updated_at float8 NOT NULL,
                started_at float8 NOT NULL,
                finished_at float8 NOT NULL,
                lease_owner text,
                lease_until float8,
                args bytea NOT NULL,
                result bytea,
                traceback text
            )""",
            f"CREATE INDEX tasks_ready ON {t} (lane, priority, seq) "
            "WHERE status = 'new' AND eta = 0",
            f"CREATE INDEX tasks_delayed ON {t} (lane, eta) WHERE status = 'new' AND eta > 0",
            f"CREATE INDEX tasks_leased ON {t} (lease_owner) WHERE status = 'process'",
            f"CREATE INDEX tasks_finished ON {t} (finished_at) WHERE {FINISHED_SQL}",
            f"INSERT INTO {m} VALUES ('schema_version', '1')",
        ]
        # Upgrades, by the version they lead to; each only adds. `_ensure_schema` runs
        # those after the version it finds, then records SCHEMA_VERSION.
        r = f"{schema}.{RATES}"
        self.rates = r
        self.steps: dict[int, list[str]] = {
            # -- version 2: unique tasks, progress, rate limits ----------------------------
            2: [
                f"ALTER TABLE {t} ADD COLUMN unique_key text",
                f"ALTER TABLE {t} ADD COLUMN progress bytea",  # msgpack [done, total, note]
                f"CREATE UNIQUE INDEX tasks_unique ON {t} (task_name, unique_key) "
                "WHERE unique_key IS NOT NULL AND status IN ('new', 'process')",
                f"CREATE INDEX tasks_named ON {t} (task_name, priority, seq) "
                "WHERE status = 'new' AND eta = 0",
                f"CREATE TABLE {r} (task_name text PRIMARY KEY, next_at float8 NOT NULL)",
                f"CREATE INDEX tasks_seq ON {t} (seq)",  # the dashboard's keyset pages
                # cancel and requeue. `history`: the earlier runs of a requeued task (JSON,
                # see task.history_entry). `cancel_requested`: a cancel asked while the
                # task ran, until its dispatcher ends it (a put-back keeps it: it is an
                # UPDATE); the partial index keeps the periodic check one walk of an
                # index that is almost always empty.
                f"ALTER TABLE {t} ADD COLUMN history text",
                f"ALTER TABLE {t} ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false",
                f"CREATE INDEX tasks_cancel_requested ON {t} (status) WHERE cancel_requested",
                # what travels with a task from add_task to its runs (record.headers), JSON
                f"ALTER TABLE {t} ADD COLUMN headers text",
            ],
            # -- end of version 2 ----------------------------------------------------------
        }
        self.set_version = f"UPDATE {m} SET value = $1 WHERE key = 'schema_version'"
        # A unique task: inserted unless one of its name and key is new or process (the
        # partial unique index decides, atomically across hosts); then None.
        self.put_unique = f"""
            WITH put AS (
                INSERT INTO {t} (uuid, task_name, lane, status, priority, eta, retry,
                    created_at, updated_at, started_at, finished_at, args, unique_key, headers)
                VALUES ($1, $2, $3, 'new', $4, $5, 0, $6, $6, 0, 0, $7, $8, $10)
                ON CONFLICT (task_name, unique_key)
                    WHERE unique_key IS NOT NULL AND status IN ('new', 'process')
                DO NOTHING
                RETURNING uuid
            )
            SELECT (SELECT uuid FROM put), pg_notify($9, 'n')"""
        self.unique_holder = (
            f"SELECT {COLUMNS} FROM {t} WHERE task_name = $1 AND unique_key = $2 "
            "AND status IN ('new', 'process')"
        )
        self.save_progress = (
            f"UPDATE {t} AS old SET progress = x.p FROM unnest($1::uuid[], $2::bytea[]) "
            "AS x(u, p) WHERE old.uuid = x.u AND old.status = 'process'"
        )
        # A rate-limited task's turn: granted (the new next_at returned) if it has come
        # at $2; the row lock makes two hosts asking at once take turns.
        self.rate_turn = f"""
            INSERT INTO {r} AS r (task_name, next_at) VALUES ($1, $2::float8 + $3::float8)
            ON CONFLICT (task_name) DO UPDATE
                SET next_at = greatest(r.next_at, $2::float8) + $3::float8
                WHERE r.next_at <= $2::float8
            RETURNING next_at"""
        self.rate_next = f"SELECT next_at FROM {r} WHERE task_name = $1"
        self.named_waiting = (
            f"SELECT exists(SELECT 1 FROM {t} WHERE task_name = $1 AND lane = $2 "
            "AND status = 'new' AND eta = 0)"
        )
        self.cancel_lock = f"SELECT status FROM {t} WHERE uuid = $1 FOR UPDATE"
        self.cancel_queued = (
            f"UPDATE {t} SET status = 'cancel', updated_at = $2, finished_at = $2, "
            "traceback = $3 WHERE uuid = $1"
        )
        self.cancel_request = f"UPDATE {t} SET cancel_requested = true WHERE uuid = $1"
        self.cancels_any = f"SELECT EXISTS (SELECT 1 FROM {t} WHERE cancel_requested)"
        # Requests whose task went back to the queue (a retry put back, a lease
        # reclaimed) end it now; those of ended tasks are dropped; ours are returned.
        self.cancels_check = f"""
            WITH ended AS (
                UPDATE {t} SET status = 'cancel', updated_at = $1, finished_at = $1,
                    traceback = $2, cancel_requested = false
                WHERE cancel_requested AND status = 'new'
                RETURNING 1
            ), gone AS (
                UPDATE {t} SET cancel_requested = false
                WHERE cancel_requested AND status NOT IN ('new', 'process')
            )
            SELECT uuid, (SELECT count(*) FROM ended) FROM {t}
            WHERE cancel_requested AND status = 'process' AND lease_owner = $3
            UNION ALL SELECT NULL, (SELECT count(*) FROM ended)"""
        self.requeue_lock = f"SELECT {COLUMNS}, history FROM {t} WHERE uuid = $1 FOR UPDATE"
        self.requeue = f"""
            WITH back AS (
                UPDATE {t} SET seq = nextval(pg_get_serial_sequence('{t}', 'seq')),
                    status = 'new', eta = 0, retry = 0, updated_at = $2, started_at = 0,
                    finished_at = 0, result = NULL, traceback = NULL, lease_owner = NULL,
                    lease_until = NULL, cancel_requested = false, history = $3
                WHERE uuid = $1
                RETURNING seq
            )
            SELECT (SELECT seq FROM back), pg_notify($4, 'n')"""
        # New tasks (their uuid is new: ON CONFLICT only meets a put tried again after its
        # reply was lost, which then changes nothing). The NOTIFY rides in the same
        # statement: sent at commit, never before. Seven arrays, not eleven: encoding
        # them is most of a put's cost in the client.
        self.put = f"""
            WITH put AS (
                INSERT INTO {t} (uuid, task_name, lane, status, priority, eta, retry,
                    created_at, updated_at, started_at, finished_at, args)
                SELECT u, n, l, 'new', p, e, 0, c, c, 0, 0, a
                FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int8[], $5::float8[],
                            $6::float8[], $7::bytea[]) AS x(u, n, l, p, e, c, a)
                ON CONFLICT (uuid) DO NOTHING
            )
            SELECT pg_notify($8, $9)"""
        # The same with an eighth array, `headers`, for a batch where some task has them.
        self.put_headers = f"""
            WITH put AS (
                INSERT INTO {t} (uuid, task_name, lane, status, priority, eta, retry,
                    created_at, updated_at, started_at, finished_at, args, headers)
                SELECT u, n, l, 'new', p, e, 0, c, c, 0, 0, a, h
                FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int8[], $5::float8[],
                            $6::float8[], $7::bytea[], $8::text[]) AS x(u, n, l, p, e, c, a, h)
                ON CONFLICT (uuid) DO NOTHING
            )
            SELECT pg_notify($9, $10)"""
        # A task we hold put back (a retry, an interrupted run, an inbox at stop). It
        # replaces the row only while the row is still leased to us ($12): if our lease
        # was lost meanwhile, the reclaimer already put it back, attempt counted.
        self.put_back = f"""
            WITH put AS (
                UPDATE {t} SET seq = nextval(pg_get_serial_sequence('{t}', 'seq')),
                    status = 'new', priority = $2, eta = $3, retry = $4, updated_at = $5,
                    started_at = $6, finished_at = 0, args = $7, result = NULL,
                    traceback = $8, lease_owner = NULL, lease_until = NULL
                WHERE uuid = $1 AND status = 'process' AND lease_owner = $9
            )
            SELECT pg_notify($10, $11)"""
        self.finish = f"""
            WITH done AS (
                UPDATE {t} AS old SET status = x.s, retry = x.r, updated_at = x.up,
                    started_at = x.st, finished_at = x.f, result = x.res, traceback = x.tb,
                    lease_owner = NULL, lease_until = NULL,
                    progress = coalesce(x.pr, old.progress)
                FROM unnest($1::uuid[], $2::text[], $3::int4[], $4::float8[], $5::float8[],
                            $6::float8[], $7::bytea[], $8::text[], $9::bytea[])
                    AS x(u, s, r, up, st, f, res, tb, pr)
                WHERE old.uuid = x.u
            )
            SELECT pg_notify($10, 'f')"""
        # ctid: the row version the subquery locked; no index on seq needed to find it.
        self.take = f"""
            UPDATE {t} AS old SET status = 'process', lease_owner = $1,
                lease_until = {SERVER_NOW} + $2
            FROM (SELECT ctid FROM {t} WHERE lane = $3 AND status = 'new' AND eta = 0
                  ORDER BY priority, seq LIMIT $4 FOR UPDATE SKIP LOCKED) AS picked
            WHERE old.ctid = picked.ctid
            RETURNING {", ".join("old." + c.strip() for c in COLUMNS.split(","))}"""
        # The same, for a lane with rate-limited tasks: one of them ($5), or the others
        # of the lane ($6: the names to leave out).
        returning = ", ".join("old." + c.strip() for c in COLUMNS.split(","))
        self.take_named = f"""
            UPDATE {t} AS old SET status = 'process', lease_owner = $1,
                lease_until = {SERVER_NOW} + $2
            FROM (SELECT ctid FROM {t} WHERE task_name = $5 AND lane = $3 AND status = 'new'
                  AND eta = 0 ORDER BY priority, seq LIMIT $4 FOR UPDATE SKIP LOCKED) AS picked
            WHERE old.ctid = picked.ctid
            RETURNING {returning}"""
        self.take_others = f"""
            UPDATE {t} AS old SET status = 'process', lease_owner = $1,
                lease_until = {SERVER_NOW} + $2
            FROM (SELECT ctid FROM {t} WHERE lane = $3 AND status = 'new' AND eta = 0
                  AND task_name <> ALL($5::text[])
                  ORDER BY priority, seq LIMIT $4 FOR UPDATE SKIP LOCKED) AS picked
            WHERE old.ctid = picked.ctid
            RETURNING {returning}"""
        # Delayed tasks now due join the ready ones, keeping their arrival order; the
        # earliest ETA of those left (the snapshot still shows the due ones delayed).
        self.promote = f"""
            WITH due AS (
                UPDATE {t} SET eta = 0
                WHERE lane = $1 AND status = 'new' AND eta > 0 AND eta <= $2
            )
            SELECT min(eta) FROM {t} WHERE lane = $1 AND status = 'new' AND eta > $2"""
        self.broken = (
            f"UPDATE {t} SET status = 'error', traceback = x.tb, updated_at = $2, "
            "finished_at = $2, lease_owner = NULL, lease_until = NULL "
            "FROM unnest($1::uuid[], $3::text[]) AS x(u, tb) WHERE uuid = x.u"
        )
        self.next_eta = f"SELECT min(eta) FROM {t} WHERE lane = $1 AND status = 'new' AND eta > 0"
        self.get = f"SELECT {COLUMNS}, history FROM {t} WHERE uuid = $1"
        self.counts = f"SELECT status, count(*) FROM {t} GROUP BY status"
        self.drop_queued = (
            f"UPDATE {t} SET status = 'cancel', updated_at = $1, finished_at = $1, "
            "traceback = 'cancelled: the app stopped before the task started' "
            "WHERE status = 'new'"
        )
        self.renew = (
            f"UPDATE {t} SET lease_until = {SERVER_NOW} + $1 "
            "WHERE uuid = ANY($2::uuid[]) AND status = 'process' AND lease_owner = $3"
        )
        self.owners = (
            f"SELECT lease_owner, min(lease_until), {SERVER_NOW} FROM {t} "
            "WHERE status = 'process' GROUP BY lease_owner"
        )
        # $4: the owner, or NULL for "every owner whose lease expired"
        self.reclaim = f"""
            WITH back AS (
                UPDATE {t} SET status = 'new', eta = 0, retry = retry + 1,
                    lease_owner = NULL, lease_until = NULL, updated_at = $1, traceback = $2
                WHERE status = 'process' AND lease_owner = $3
                    AND ($4 OR lease_until < {SERVER_NOW})
                RETURNING 1
            )
            SELECT pg_notify($5, 'n'), (SELECT count(*) FROM back)"""
        self.release = (
            f"UPDATE {t} SET status = 'new', eta = 0, retry = retry + 1, lease_owner = NULL, "
            "lease_until = NULL, traceback = 'put back: its dispatcher closed the store "
            "while holding it; attempt counted' WHERE status = 'process' AND lease_owner = $1"
        )
        self.trim_age = f"DELETE FROM {t} WHERE {FINISHED_SQL} AND finished_at < $1"
        self.trim_count_mark = (
            f"SELECT finished_at FROM {t} WHERE {FINISHED_SQL} "
            "ORDER BY finished_at DESC LIMIT 1 OFFSET $1"
        )
        self.trim_count = f"DELETE FROM {t} WHERE {FINISHED_SQL} AND finished_at <= $1"
        self.task_rows = (
            f"SELECT task_name, status, retry, created_at, eta, started_at, finished_at FROM {t}"
        )
