"""What the workers can serve, read on the web side: the catalogs the live workers publish (each scans
its models directory and Hugging Face cache: engines/worker/catalog.py), and the check a local
engine's model gets before it is saved, asked of the live workers themselves, since the web server's
disk is not where models are loaded."""

import json
import time
from dataclasses import dataclass, field
from typing import Any

from celery.exceptions import TimeoutError as CeleryTimeout
from django.conf import settings
from django.template.defaultfilters import filesizeformat

from core import errors, shared_state
from engines import contract
from engines.celery_app import app
from engines.heartbeats import live_workers

KINDS = {"llm": "an LLM", "embedding": "an embedding", "diffusion": "a diffusion"}
FACTS = ("name", "kind", "runtime", "architecture", "parameters", "dtype", "size_bytes", "memory_bytes",
         "context_length", "chat_template")


def models() -> list[dict[str, Any]]:
    """Every model a live worker can serve, one row per path: its facts and `workers`, [{id, fits}]
    of the workers that have it. Sorted by name, then path."""
    workers = [worker for worker in live_workers() if not worker["lost"]]
    if not workers:
        return []
    raws = shared_state.client().mget([shared_state.worker_catalog_key(worker["id"]) for worker in workers])
    rows: dict[str, dict[str, Any]] = {}
    for worker, raw in zip(workers, raws, strict=True):
        for model in json.loads(raw)["models"] if raw else ():
            row = rows.setdefault(model["path"], {"path": model["path"], "source": model["source"],
                                                  **{name: model.get(name) for name in FACTS}, "workers": []})
            row["workers"].append({"id": worker["id"], "fits": model["fits"]})
    return sorted(rows.values(), key=lambda row: (row["name"], row["path"]))


@dataclass
class Findings:
    """What the live workers found at a model: the facts of the first that has it, which have it (and
    whether it fits each one's cache), and a warning when no worker could be asked."""

    facts: dict[str, Any] = field(default_factory=dict)
    workers: list[dict[str, Any]] = field(default_factory=list)
    warning: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {**{name: self.facts.get(name) for name in FACTS}, "workers": self.workers,
                "warning": self.warning or None}


def _ask_workers(task: str, args: list[Any], what: str) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]],
                                                                 dict[str, dict[str, Any]], str]:
    """Send `task(*args)` to every live worker and wait for their answers (one wait for all):
    (the workers, {worker: answer}, {worker: answer with an "error"}, a warning when none could be asked)."""
    workers = [worker for worker in live_workers() if not worker["lost"]]
    if not workers:
        return [], {}, {}, (f"No worker is running, so the {what} could not be checked; it is checked when a "
                            "worker first loads it.")
    asked = {worker["id"]: app.send_task(task, args=args, queue=contract.worker_queue(worker["id"]))
             for worker in workers}
    answers: dict[str, dict[str, Any]] = {}
    problems: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + settings.BLAZE_INSPECT_TIMEOUT_SECONDS  # one wait for all of them
    for worker_id, pending in asked.items():
        try:
            answer = pending.get(timeout=max(0.1, deadline - time.monotonic()), propagate=False)
        except CeleryTimeout:
            continue
        if not isinstance(answer, dict):  # the task failed: the worker could not read it
            answer = {"error": f"the worker could not read it ({answer})."}
        (problems if "error" in answer else answers)[worker_id] = answer
    if not answers and not problems:
        return workers, {}, {}, (f"No worker answered within {settings.BLAZE_INSPECT_TIMEOUT_SECONDS:g} s, so the "
                                 f"{what} could not be checked; it is checked when a worker first loads it.")
    return workers, answers, problems, ""


def inspect(model: str, kind: str | None) -> Findings:
    """Ask every live worker what it finds at `model` (configs and headers read, no weights loaded).
    Raises InvalidInput naming `model` when it is a path no worker has or fits no worker's cache, `kind`
    when it is another kind of model. A hub id no worker has cached, or no live worker (or none
    answering in time): the findings are empty and carry a warning, and the model is saved unchecked."""
    workers, answers, problems, warning = _ask_workers(contract.INSPECT_MODEL_TASK, [model], "model")
    if warning:
        return Findings(warning=warning)
    if not answers:
        if not contract.is_model_path(model):  # a hub id: a worker looks for it in its cache when it loads it
            return Findings(warning=f"No live worker has {model} in its Hugging Face cache yet.")
        answer = next(iter(problems.values()))
        raise errors.InvalidInput(f"No live worker has this model ({', '.join(sorted(problems))} looked): "
                                  f"{answer['error']}", field="model")
    facts = next(iter(answers.values()))
    if kind and facts["kind"] != kind:
        what = facts["architecture"] or facts["runtime"]
        raise errors.InvalidInput(f"{model} is {KINDS[facts['kind']]} model ({what}), not {KINDS.get(kind, kind)} one.",
                                  field="kind")
    found = [{"id": worker_id, "fits": answer["fits"]} for worker_id, answer in sorted(answers.items())]
    if not any(each["fits"] for each in found):
        largest = max(worker["cache_budget_bytes"] for worker in workers if worker["id"] in answers)
        raise errors.InvalidInput(
            f"{model} needs about {filesizeformat(facts['memory_bytes'] or 0)} and the largest model cache of the "
            f"workers that have it holds {filesizeformat(largest)}: it can never be loaded.", field="model")
    return Findings(facts=facts, workers=found)


def inspect_adapter(path: str, model: str, runtime: str) -> Findings:
    """Ask every live worker what it finds at the adapter `path`, checked against the base `model` run by
    `runtime` (engines/worker/adapters.py). Raises InvalidInput naming `path` when no worker has an
    adapter there that fits that model. No live worker, or none answering in time: the findings are
    empty and carry a warning, and the adapter is saved unchecked."""
    _, answers, problems, warning = _ask_workers(contract.INSPECT_ADAPTER_TASK, [path, model, runtime], "adapter")
    if warning:
        return Findings(warning=warning)
    if not answers:
        answer = next(iter(problems.values()))
        raise errors.InvalidInput(f"No live worker has an adapter there that fits {model} "
                                  f"({', '.join(sorted(problems))} looked): {answer['error']}", field="path")
    return Findings(facts=next(iter(answers.values())), workers=[{"id": worker_id} for worker_id in sorted(answers)])
