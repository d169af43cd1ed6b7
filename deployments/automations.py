"""Create or update walship's alerts on the Prefect server: ``make automations``.

    WALSHIP_ALERT_WEBHOOK=https://hooks.example.com/... .venv/bin/python -m deployments.automations [--silence SECONDS]

deployments/automations.yaml holds the automations (their only copy;
docs/AUTOMATIONS.md says what each fires on). The webhook's URL is saved in a
Prefect Webhook block, a secret the UI does not show, and every automation's
``call-webhook`` action posts to it. An automation is found by its name and
updated in place, so running this again after editing the file changes them
instead of adding copies; one it created earlier (tag ``walship-alerts``) that
the file no longer has is deleted. ``--silence`` replaces the window of the
"shipping stopped" automations (seconds without a completed run).

A window shorter than a healthy replica can go without a completed run would
fire while shipping is fine: the silence is checked against the shipping
deployments the server holds (served or deployed, each a run every
``interval`` lasting its ``duration`` parameter) and refused below the
longest ``interval + duration``. With no such deployment on the server yet it
cannot be checked: the command says so and goes on.
"""

import argparse
import copy
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml
from prefect.blocks.webhook import Webhook
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.schedules import IntervalSchedule
from prefect.events.schemas.automations import AutomationCore, Posture
from prefect.settings import PREFECT_API_URL

AUTOMATIONS = Path(__file__).with_name("automations.yaml")
TAG = "walship-alerts"

__all__ = ["AUTOMATIONS", "TAG", "apply", "automations", "shipping_cycles", "silence_refusal"]


def automations(document: dict[str, Any], block_id: str, silence: int | None = None) -> list[AutomationCore]:
    """The file's automations, posting to the Webhook block ``block_id``, tagged as this command's."""
    found = []
    for spec in copy.deepcopy(document["automations"]):
        spec.setdefault("enabled", True)
        spec["tags"] = [TAG]
        if silence is not None and spec["trigger"].get("posture") == Posture.Proactive.value:
            spec["trigger"]["within"] = silence
        for action in spec["actions"]:
            if action["type"] == "call-webhook":
                action["block_document_id"] = block_id
        found.append(AutomationCore.model_validate(spec))
    return found


def shipping_cycles(client: SyncPrefectClient) -> dict[str, float]:
    """Each shipping deployment on the server (an interval schedule and a ``duration`` parameter): the longest a
    healthy replica of it goes without a completed run, its interval plus its duration, in seconds."""
    cycles = {}
    for deployment in client.read_deployments():
        duration = deployment.parameters.get("duration")
        intervals = [
            s.schedule.interval.total_seconds()
            for s in deployment.schedules
            if isinstance(s.schedule, IntervalSchedule)
        ]
        if intervals and isinstance(duration, int | float):
            cycles[deployment.name] = max(intervals) + duration
    return cycles


def silence_refusal(silence: float, cycles: dict[str, float]) -> str | None:
    """Why ``silence`` would alert while shipping is healthy, in one line (None: it would not)."""
    if not cycles:
        return None
    name, cycle = max(cycles.items(), key=lambda item: item[1])
    if silence >= cycle:
        return None
    return (
        f"a 'shipping stopped' window of {silence:g} s would fire while {name} ships normally: its runs start every "
        f"interval and last their duration, {cycle:g} s together; use --silence {cycle:g} or more"
    )


def apply(client: SyncPrefectClient, wanted: Sequence[AutomationCore]) -> list[str]:
    """Make the server hold ``wanted``, each once by name; one line per change."""
    existing = client.read_automations()
    done = []
    for automation in wanted:
        same_name = [a for a in existing if a.name == automation.name]
        if same_name:
            client.update_automation(same_name[0].id, automation)
            done.append(f"updated: {automation.name}")
        else:
            client.create_automation(automation)
            done.append(f"created: {automation.name}")
        for duplicate in same_name[1:]:
            client.delete_automation(duplicate.id)
            done.append(f"deleted a second copy: {automation.name}")
    names = {automation.name for automation in wanted}
    for gone in [a for a in existing if TAG in a.tags and a.name not in names]:
        client.delete_automation(gone.id)
        done.append(f"deleted (no longer in {AUTOMATIONS.name}): {gone.name}")
    return done


def _fail(message: str, status: int) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(status)


def _file_silence(document: dict[str, Any]) -> float:
    """The shortest "shipping stopped" window the file sets."""
    windows = [
        float(spec["trigger"]["within"])
        for spec in document["automations"]
        if spec["trigger"].get("posture") == Posture.Proactive.value
    ]
    return min(windows, default=float("inf"))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deployments.automations", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--webhook",
        default=os.environ.get("WALSHIP_ALERT_WEBHOOK"),
        help="the URL alerts are POSTed to (default: $WALSHIP_ALERT_WEBHOOK)",
    )
    parser.add_argument(
        "--silence",
        type=int,
        metavar="SECONDS",
        help="seconds without a completed shipping run before 'shipping stopped' fires (default: the file's)",
    )
    args = parser.parse_args(argv)
    if not args.webhook:
        _fail("no webhook URL to send alerts to: set WALSHIP_ALERT_WEBHOOK (or pass --webhook URL)", 2)
    if not PREFECT_API_URL.value():
        _fail("PREFECT_API_URL is not set: the automations go to the Prefect server it names", 2)
    document = yaml.safe_load(AUTOMATIONS.read_text())
    silence = args.silence if args.silence is not None else _file_silence(document)
    try:
        with get_client(sync_client=True) as client:
            cycles = shipping_cycles(client)
            if refusal := silence_refusal(silence, cycles):
                _fail(refusal, 2)
            if not cycles:
                print(
                    f"warning: the server holds no scheduled shipping deployment yet, so a 'shipping stopped' window "
                    f"of {silence:g} s is not checked: keep it at least ship_window + ship_duration; run this again "
                    "once they are deployed",
                    file=sys.stderr,
                )
            block = Webhook(url=args.webhook, headers={"Content-Type": "application/json"})
            block_id = block.save(document["webhook_block"], overwrite=True)
            lines = apply(client, automations(document, str(block_id), args.silence))
    except httpx.HTTPError as exc:
        _fail(f"the Prefect API at {PREFECT_API_URL.value()} failed: {exc}", 1)
    print(f"alerts post to the Webhook block {document['webhook_block']!r}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
