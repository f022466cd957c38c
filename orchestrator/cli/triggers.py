"""``orchestrator triggers`` (the stream consumer service) and ``orchestrator trigger``
(``list``, ``events NAME``): event triggers from the command line."""

from __future__ import annotations

import json
import logging
import signal
import time
from pathlib import Path
from typing import Any

import click

from orchestrator.core.triggers import WebhookSource


@click.command("triggers")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
@click.option("--heartbeat-file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Touch this file every ORCH_CONSUMER_BLOCK_S while Redis "
              "answers (for a container health check).")
@click.pass_obj
def triggers_service(c: Any, log_level: str, heartbeat_file: Path | None) -> None:
    """Run the stream consumer service until Ctrl-C or SIGTERM: every stream trigger's
    entries become runs, each acknowledged once its run exists (docs/triggers.md)."""
    from orchestrator.runtime.consumer import StreamConsumer
    from orchestrator.runtime.coordinator import Coordinator
    from orchestrator.runtime.triggers import Intake, TriggerTable
    from orchestrator.store.triggers import TriggerStore

    logging.basicConfig(level=log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    s = c.settings
    table = TriggerTable.build(c.catalog, s, webhooks=False)
    store = TriggerStore.from_url(s.redis_target, s.key_prefix)
    consumer = StreamConsumer(
        table, Intake(Coordinator(s, c.catalog), store, s.trigger_events_kept), store,
        s.redis_url, claim_idle_s=s.consumer_claim_idle_s, block_s=s.consumer_block_s,
        crash_before_ack=s.consumer_crash_before_ack)

    def _stop(_signum: int, _frame: Any) -> None:
        consumer._stop.set()  # the main thread's wait returns; stop() joins below

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    consumer.start()
    consumer.wait(heartbeat_file)
    consumer.stop()
    store.close()


@click.group("trigger")
def trigger() -> None:
    """Inspect event triggers: list them, read each one's handled events."""


@trigger.command("list")
@click.pass_obj
def list_triggers(c: Any) -> None:
    """List the cataloged triggers: name, workflow, source."""
    for name, td in sorted(c.catalog.triggers.items()):
        src = td.source
        how = (f"webhook ({src.scheme.value}) POST /v1/hooks/{name}"
               if isinstance(src, WebhookSource) else f"stream {src.stream}")
        click.echo(f"{name}\t{td.workflow}\t{how}")


@trigger.command("events")
@click.argument("name")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True, help="One JSON record a line.")
@click.pass_obj
def events(c: Any, name: str, limit: int, as_json: bool) -> None:
    """Print trigger NAME's latest events, newest first (what became of each)."""
    from orchestrator.store.triggers import TriggerStore

    c.catalog.trigger(name)  # TriggerNotFound: one line, exit 2
    s = c.settings
    store = TriggerStore.from_url(s.redis_target, s.key_prefix, timeout_s=s.redis_timeout_s)
    try:
        for rec in store.events(name, limit):
            if as_json:
                click.echo(json.dumps(rec.model_dump(mode="json", exclude_none=True)))
                continue
            at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rec.at))
            line = f"{at}  {rec.outcome.value:<9} {rec.source:<7} " \
                   f"event {rec.event_id or rec.message_id or '-'}"
            if rec.run_id:
                line += f"  run {rec.run_id}"
            if rec.reason and rec.outcome.value not in ("accepted", "duplicate", "filtered"):
                line += f"  ({rec.reason})"
            click.echo(line)
    finally:
        store.close()
