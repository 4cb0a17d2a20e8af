"""Progress and summaries shown while a job runs: rich on stderr, so stdout stays parseable."""

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from producers import Client
from storage.ledger import JobView

err = Console(stderr=True)


def pace(view: JobView) -> str:
    """`12.5 rows/s, ETA 1m 04s`: the job's weighted rate and ETA (storage/progress.py), or
    `ETA -` while too little is done to say."""
    rate = view.rows_per_s
    eta = view.eta_seconds
    shown = "" if rate is None else f"{rate:.1f} rows/s, "
    return shown + ("ETA -" if eta is None else f"ETA {clock(eta)}")


def clock(seconds: float) -> str:
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def wait_with_bar(client: Client, job_id: str, timeout: float | None = None) -> JobView:
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    ) as bar:
        task = bar.add_task(job_id[:8], total=None, detail="")

        def show(view: JobView) -> None:
            c = view.counts
            bar.update(
                task,
                total=c.total,
                completed=c.processed,
                detail=f"{view.status} ok={c.ok} (cached={c.cached}) "
                f"invalid={c.invalid} error={c.error}"
                + ("" if view.status.finished else f"  {pace(view)}"),
            )

        return client.wait(job_id, timeout=timeout, on_progress=show)


def wait_all_with_bars(
    client: Client, jobs: dict[str, str], timeout: float | None = None, poll: float = 0.25
) -> dict[str, JobView]:
    """One bar per job until every job has finished."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with Progress(
        TextColumn("[bold]{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=err,
    ) as bar:
        bars = {name: bar.add_task(name, total=None, detail="") for name in jobs}
        while True:
            views = {name: client.status(job_id) for name, job_id in jobs.items()}
            for name, view in views.items():
                c = view.counts
                bar.update(
                    bars[name],
                    total=c.total,
                    completed=c.processed,
                    detail=f"{view.status} ok={c.ok} (cached={c.cached}) "
                    f"invalid={c.invalid} error={c.error}"
                    + ("" if view.status.finished else f"  {pace(view)}"),
                )
            if all(v.status.finished for v in views.values()):
                return views
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"jobs still running after {timeout}s: "
                    f"{[n for n, v in views.items() if not v.status.finished]}"
                )
            time.sleep(poll)


def describe_explanation(expl: dict[str, Any], n: int = 3) -> str:
    """The few attributions that mattered most, in words fit for each modality."""
    detail = expl.get("detail") or {}
    if "top" in detail:  # records
        return "pushed most by: " + "; ".join(
            f"{f['feature']} = {f['value']:.4g} (mean {f['baseline']:.4g}) {f['attribution']:+.3f}"
            for f in detail["top"][:n]
        )
    if "grid" in detail:  # images
        rows, cols = detail["grid"]
        scores = expl["attributions"]
        best = sorted(range(len(scores)), key=lambda i: -scores[i])[:n]
        cell = detail.get("cell", 1)
        return (
            f"saliency grid {rows}x{cols} ({cell}px cells); strongest cells at "
            + ", ".join(f"row {i // cols} col {i % cols} ({scores[i]:+.3f})" for i in best)
            + "; heatmap in the HTML report"
        )
    prefix = "time segments: " if "segments" in detail else "words: "
    return prefix + top_tokens(expl, n)


def top_tokens(explanation: dict[str, Any], n: int = 3) -> str:
    pairs = sorted(
        zip(explanation["tokens"], explanation["attributions"], strict=False),
        key=lambda p: -abs(p[1]),
    )[:n]
    return ", ".join(f"{tok} ({score:+.3g})" for tok, score in pairs)


def summary(view: JobView, rows: list[dict[str, Any]], texts: dict[str, str]) -> None:
    c = view.counts
    data = view.as_dict()
    rate = c.processed / data["elapsed_s"] if data["elapsed_s"] else 0.0
    err.print(
        f"\n[bold]job {view.id}[/]: {view.status}  total={c.total} ok={c.ok} cached={c.cached} "
        f"invalid={c.invalid} error={c.error}  {rate:.1f} items/s "
        f"({data['elapsed_s']}s from first claim to last result)"
    )
    table = Table(title="examples", show_lines=False)
    for col in ("key", "text", "result", "most attributed"):
        table.add_column(col, overflow="fold")
    for row in rows:
        out = row.get("output") or {}
        result = (
            out.get("label")
            and f"{out['label']} ({out.get('score', 0):.2f})"
            or row.get("error")
            or (f"{out.get('dim')}-dim vector" if "embedding" in out else "")
            or str(out.get("text", ""))
        )
        expl = row.get("explanation")
        table.add_row(
            row["key"],
            texts.get(row["key"], "")[:70],
            str(result),
            top_tokens(expl) if expl and expl["status"] == "ok" else "",
        )
    err.print(table)
