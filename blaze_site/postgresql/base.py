"""Django's PostgreSQL backend, quiet towards a database that just failed to connect.

With `connect_timeout` (settings.py) a host that hangs costs a connection attempt that long, and a
request makes several (the session, a cached lookup's re-read, the view): seconds each, on every
request of the outage. After a failed attempt this process answers "the database does not answer"
at once for QUIET_SECONDS, then tries again. Django has no such setting; a pooler would hide the
outage instead of saying it."""

import time

from django.db.backends.postgresql import base

QUIET_SECONDS = 3.0


class DatabaseWrapper(base.DatabaseWrapper):
    # (host, port, database) → monotonic time of this process's last failed attempt, any thread's. Per
    # database: Django's fallback to the `postgres` database (when creating one) must still be tried.
    _failed_at = {}

    def get_new_connection(self, conn_params):
        where = (conn_params.get("host"), conn_params.get("port"), conn_params.get("dbname"))
        failed_at = self._failed_at.get(where)
        if failed_at is not None and time.monotonic() - failed_at < QUIET_SECONDS:
            raise self.Database.OperationalError(
                f"the database did not answer {time.monotonic() - failed_at:.1f} s ago; trying again "
                f"{QUIET_SECONDS:g} s after that")
        try:
            connection = super().get_new_connection(conn_params)
        except self.Database.OperationalError:
            self._failed_at[where] = time.monotonic()
            raise
        self._failed_at.pop(where, None)
        return connection
