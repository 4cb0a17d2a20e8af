"""Progress and summaries shown while a job runs: rich on stderr, so stdout stays parseable."""

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from producers import Client
from storage.ledger import JobView

err = Console(stderr=True)


def wait_with_bar(client: Client, job_id: str, timeout: float | None = None) -> JobView:
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=err,
                  transient=False) as bar:
        task = bar.add_task(job_id[:8], total=None, detail="")

        def show(view: JobView) -> None:
            c = view.counts
            bar.update(task, total=c.total, completed=c.processed,
                       detail=f"{view.status} ok={c.ok} invalid={c.invalid} error={c.error}")

        return client.wait(job_id, timeout=timeout, on_progress=show)


def top_tokens(explanation: dict[str, Any], n: int = 3) -> str:
    pairs = sorted(zip(explanation["tokens"], explanation["attributions"], strict=False),
                   key=lambda p: -abs(p[1]))[:n]
    return ", ".join(f"{tok} ({score:+.2f})" for tok, score in pairs)


def summary(view: JobView, rows: list[dict[str, Any]], texts: dict[str, str]) -> None:
    c = view.counts
    data = view.as_dict()
    rate = c.processed / data["elapsed_s"] if data["elapsed_s"] else 0.0
    err.print(f"\n[bold]job {view.id}[/]: {view.status}  total={c.total} ok={c.ok} "
              f"invalid={c.invalid} error={c.error}  {rate:.1f} items/s "
              f"({data['elapsed_s']}s from first claim to last result)")
    table = Table(title="examples", show_lines=False)
    for col in ("key", "text", "result", "most attributed"):
        table.add_column(col, overflow="fold")
    for row in rows:
        out = row.get("output") or {}
        result = out.get("label") and f"{out['label']} ({out.get('score', 0):.2f})" or \
            row.get("error") or (f"{out.get('dim')}-dim vector" if "embedding" in out else "")
        expl = row.get("explanation")
        table.add_row(row["key"], texts.get(row["key"], "")[:70], str(result),
                      top_tokens(expl) if expl and expl["status"] == "ok" else "")
    err.print(table)
