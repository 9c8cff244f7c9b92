"""The HTML status page served at ``GET /``: one table per app, refreshed every few seconds.

Pure: statuses and a timestamp in, an HTML string out. Self-contained (inline CSS, no scripts, no external
assets) and every value is escaped, since branch names and error texts come from outside.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable
from typing import Final

from reconciler.status import DeployRecord, EnvironmentStatus, Result

REFRESH_SECONDS: Final = 10

_CSS: Final = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
header{padding:12px 24px;background:#24292f;color:#fff}
header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#d0d7de;font-size:13px}
main{padding:8px 24px 24px}
h2{font-size:16px;margin:20px 0 8px}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #d0d7de}
th,td{padding:6px 10px;border-bottom:1px solid #d0d7de;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-weight:600;font-size:13px}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace}
.sub{color:#656d76;font-size:12px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff}
.ok{background:#1a7f37}.warn{background:#9a6700}.bad{background:#cf222e}.off{background:#6e7781}
.info{background:#0969da}
pre.error{white-space:pre-wrap;word-break:break-word;margin:4px 0 0;padding:6px 8px;
 background:#ffebe9;border:1px solid #ff818266;color:#82071e;font-size:12px;max-width:60ch}
ul.drift{margin:0;padding-left:16px}
.none{color:#656d76}
"""

# Badge colour per value: green good, amber in between, red bad, grey unknown.
_SYNC_CLASS: Final = {"Synced": "ok", "OutOfSync": "warn", "Unknown": "off"}
_HEALTH_CLASS: Final = {"Healthy": "ok", "Progressing": "info", "Degraded": "bad", "Missing": "bad"}
_RESULT_CLASS: Final = {
    Result.SUCCESS: "ok",
    Result.NOOP: "ok",
    Result.RUNNING: "info",
    Result.ROLLED_BACK: "warn",
    Result.FAILURE: "bad",
}


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _badge(text: str, css: str) -> str:
    return f'<span class="badge {css}">{_e(text)}</span>'


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts is not None else "—"


def _commit(sha: str | None) -> str:
    return f'<code title="{_e(sha)}">{_e(sha[:12])}</code>' if sha else '<span class="none">none</span>'


def _link(url: str | None) -> str:
    if not url:
        return '<span class="none">—</span>'
    # Only web links are clickable: a template filled with a branch name must never become `javascript:`.
    if url.lower().startswith(("http://", "https://")):
        return f'<a href="{_e(url)}" rel="noopener noreferrer">{_e(url)}</a>'
    return f"<code>{_e(url)}</code>"


def _deploy(record: DeployRecord | None) -> str:
    if record is None:
        return '<span class="none">never</span>'
    parts = [
        _badge(str(record.result), _RESULT_CLASS.get(record.result, "off")),
        f" {_commit(record.commit)}",
        f'<div class="sub">{_e(record.trigger)}, started {_e(_when(record.started))}',
    ]
    if record.finished is not None:
        parts.append(f", finished {_e(_when(record.finished))}")
    parts.append("</div>")
    if record.rollback_of:
        parts.append(f'<div class="sub">rolled back from {_commit(record.rollback_of)}</div>')
    if record.error:
        parts.append(f'<pre class="error">{_e(record.error)}</pre>')
    return "".join(parts)


def _drifts(env: EnvironmentStatus) -> str:
    if not env.drifts:
        return '<span class="none">none</span>'
    items = "".join(
        f"<li><code>{_e(d.service)}</code> {_badge(str(d.reason), 'warn')}"
        + (f' <span class="sub">{_e(d.detail)}</span>' if d.detail else "")
        + "</li>"
        for d in env.drifts
    )
    return f'<ul class="drift">{items}</ul>'


def _row(env: EnvironmentStatus) -> str:
    name = f"<strong>{_e(env.environment)}</strong>"
    if env.ephemeral:
        name += " " + _badge("preview", "info")
    if env.suspended:
        name += " " + _badge("suspended", "off")
    name += f'<div class="sub">{_e(env.project)} · host {_e(env.host)}</div>'
    if env.suspended and env.suspend_reason:
        name += f'<div class="sub">{_e(env.suspend_reason)}</div>'
    cells = [
        name,
        f"<code>{_e(env.branch)}</code>",
        _badge(str(env.sync), _SYNC_CLASS.get(str(env.sync), "off")),
        _badge(str(env.health), _HEALTH_CLASS.get(str(env.health), "off")),
        f'deployed {_commit(env.deployed_commit)}<div class="sub">head {_commit(env.head_commit)}</div>',
        _deploy(env.last_deploy),
        _drifts(env),
        _link(env.url),
    ]
    if env.error:
        cells[0] += f'<pre class="error">{_e(env.error)}</pre>'
    row_id = _e(f"env-{env.app}-{env.project}")
    return f'<tr id="{row_id}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _by_app(envs: Iterable[EnvironmentStatus]) -> dict[str, list[EnvironmentStatus]]:
    groups: dict[str, list[EnvironmentStatus]] = {}
    for env in envs:
        groups.setdefault(env.app, []).append(env)
    return groups


def render_page(
    envs: list[EnvironmentStatus],
    *,
    docker_up: bool,
    generated_at: float,
    hosts_up: dict[str, bool] | None = None,
) -> str:
    """The whole status page; ``generated_at`` (unix seconds) is shown as the time of the snapshot.
    With several hosts, each engine gets its own up/down badge."""
    head = (
        "<th>Environment</th><th>Branch</th><th>Sync</th><th>Health</th><th>Commit</th>"
        "<th>Last deploy</th><th>Drift</th><th>URL</th>"
    )
    sections = []
    for app, group in _by_app(envs).items():
        rows = "".join(_row(env) for env in group)
        sections.append(
            f"<section><h2>{_e(app)}</h2><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
            "</section>"
        )
    body = "".join(sections) or '<p class="none">No environments yet.</p>'
    if hosts_up and len(hosts_up) > 1:
        docker = " ".join(
            _badge(f"{host} up", "ok") if up else _badge(f"{host} down", "bad")
            for host, up in sorted(hosts_up.items())
        )
    else:
        docker = _badge("Docker up", "ok") if docker_up else _badge("Docker down", "bad")
    out_of_sync = sum(1 for e in envs if e.out_of_sync)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>reconciler: {len(envs)} environments, {out_of_sync} out of sync</title>"
        f"<style>{_CSS}</style></head><body>"
        f"<header><h1>reconciler</h1><p>{docker} · {len(envs)} environments · snapshot "
        f"{_e(_when(generated_at))} · refreshes every {REFRESH_SECONDS} s · "
        '<a href="/api/environments" style="color:#d0d7de">JSON</a> · '
        '<a href="/metrics" style="color:#d0d7de">metrics</a></p></header>'
        f"<main>{body}</main></body></html>"
    )
