"""What the benchmarks read from a running embedded stack: the model actors' stats (batch
fill, token fill, device, precision) and the CPU seconds of the stack's processes by role."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

STATS = """
import json, sys
from pathlib import Path
import ray
from workers.runtime import actor_directory as actors
actors.connect(sys.argv[1], Path(sys.argv[2]) if sys.argv[2] else None)
out = {}
for found in ray.util.list_named_actors(all_namespaces=True):
    if found["namespace"] == actors.NAMESPACE and found["name"].startswith("sluice:"):
        actor = ray.get_actor(found["name"], namespace=actors.NAMESPACE)
        out[found["name"].split(":")[2]] = ray.get(actor.stats.remote(), timeout=60)
print(json.dumps(out))
"""


def actor_stats(settings: Any) -> dict[str, Any]:
    from schemas.stack import endpoints

    ends = endpoints(settings)
    done = subprocess.run(
        [sys.executable, "-c", STATS, ends.ray_address or "", str(ends.ray_auth_token_path or "")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:]
        print(f"[bench] actor stats not read: {tail}", file=sys.stderr)
        return {}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def role_of(proc: Any) -> str:
    """Which part of the stack a process is, for the CPU accounting."""
    try:
        text = " ".join(proc.cmdline()[:4]) or proc.name()
    except Exception:
        return "gone"
    if "ModelActor" in text or "ray::" in proc.name():
        return "model actor"
    if "celery" in text or "sluice" in text and "worker" in text:
        return "celery worker"
    if "redis" in text:
        return "redis"
    return "ray system"


def stack_cpu(settings: Any) -> dict[str, float]:
    """CPU seconds (user + system) so far of the stack's processes, by role, and of this
    process (the client: submit and wait)."""
    import psutil

    from schemas.stack import StackInfo

    info = StackInfo.load(settings.data_dir)
    seen: dict[int, Any] = {}
    for pid in (info.pids if info else {}).values():
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                seen[proc.pid] = proc
        except psutil.NoSuchProcess:
            continue
    out: dict[str, float] = {}
    for proc in seen.values():
        try:
            t = proc.cpu_times()
            busy = t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            continue
        role = role_of(proc)
        out[role] = out.get(role, 0.0) + busy
    me = psutil.Process().cpu_times()
    out["client"] = me.user + me.system
    return out


def fill_between(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """Batch fill and token fill over what the actor did between two readings."""
    keys = ("batches", "items_batched", "tokens_real", "tokens_padded")
    d = {k: after.get(k, 0) - before.get(k, 0) for k in keys}
    most = after.get("max_batch_size") or 64
    return {
        "batches": d["batches"],
        "batch_fill": round(d["items_batched"] / (d["batches"] * most), 4) if d["batches"] else 0,
        "token_fill": round(d["tokens_real"] / d["tokens_padded"], 4) if d["tokens_padded"] else 0,
        "dtype": after.get("dtype"),
        "device": after.get("device"),
    }
