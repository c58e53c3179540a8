"""One tick of the bot: read new mentions into the database, then move each due job one step at a time.

Every step ends in a commit (received -> composed -> rendered -> uploaded -> replied), so
a worker killed anywhere resumes at the last committed step. The one step that cannot be
undone, posting the reply, is guarded three ways: the reply id is stored in the same
commit that ends the job, the post carries an Idempotency-Key derived from the mention,
and a job that had started posting before looks for its reply in the thread first.
Every write is conditional on the job still being leased to this worker: a step that
outlasted its lease and lost the job to another worker stops there (``LeaseLost``).

The parts, each a module: ``intake`` (mentions into rows: the cursor, the skip rules and
the limits), ``steps`` (compose -> render -> upload -> reply, and ``advance``), ``saving``
(``save`` and ``reload`` under the lease, ``LeaseLost``, ``fit_columns``), ``failures``
(``retry_later``, ``give_up``, ``defer``); ``tick`` joins them in ``Worker``, the entry point.
"""

from bot.worker.base import TickReport
from bot.worker.saving import LeaseLost, fit_columns
from bot.worker.tick import Worker

__all__ = ["LeaseLost", "TickReport", "Worker", "fit_columns"]
