"""Read-only SQL over the store, whether or not the stack runs (``telbus query``).

chDB opens a store path in one process at a time, so while the sink runs it owns the
store and serves queries over HTTP; ``run_query`` finds that endpoint through
``<data dir>/run/query.url`` and otherwise opens the store itself. With a server DSN
(``http(s)://...``) ``run_query`` always goes to the server directly.

Read-only, two independent checks:

1. statement kind: one statement, starting with SELECT, WITH, SHOW, DESCRIBE/DESC,
   EXPLAIN or EXISTS (comments and parentheses skipped); table functions that reach
   outside the store (file, url, s3, remote, executable, python, ...) are refused;
2. the engine enforces it: queries run on a dedicated client whose session has
   ``readonly=1`` (no writes, no DDL, no settings changes, no table functions), set once
   when the client is created together with the row cap and the time limit.

Endpoint: ``POST /query`` with JSON ``{"sql": "...", "limit": N}`` (or ``GET
/query?sql=...``) -> ``{"columns", "types", "rows", "row_count", "truncated",
"elapsed_s"}``; an error is HTTP 400 ``{"error": "...", "kind": "bad_sql" | "forbidden" |
"limit"}``, 401 without the token. ``GET /health`` -> ``{"ok": true}``.

Bound to loopback by default (``TELBUS_QUERY_HOST``, else ``TELBUS_HTTP_HOST``, else
127.0.0.1); port ``TELBUS_QUERY_PORT`` (default: any free port, written to the URL file).
A bearer token (``TELBUS_QUERY_TOKEN``) is required when bound to a non-loopback
address (the server refuses to start without one), and checked whenever it is set.
"""
from __future__ import annotations

import csv
import datetime as _dt
import decimal
import hmac
import io
import json
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DEFAULT_ROW_LIMIT = 10_000
MAX_ROW_LIMIT = 1_000_000
MAX_EXECUTION_S = 60
URL_FILE = "query.url"

ALLOWED = {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS"}
WRITES = {"INSERT", "CREATE", "DROP", "ALTER", "TRUNCATE", "DELETE", "UPDATE", "RENAME", "OPTIMIZE",
          "SYSTEM", "KILL", "GRANT", "REVOKE", "SET", "USE", "ATTACH", "DETACH", "EXCHANGE", "BACKUP",
          "RESTORE", "UNDROP", "MOVE", "CHECK", "REPLACE", "UPSERT", "MERGE", "BEGIN", "COMMIT",
          "ROLLBACK", "WATCH", "PARALLEL"}
#: table functions that read outside the store (refused even though readonly=1 also stops them)
_OUTSIDE = re.compile(
    r"\b(file|url|urlcluster|s3|s3cluster|gcs|azureblobstorage|hdfs|remote|remotesecure|cluster|"
    r"clusterallreplicas|mysql|postgresql|sqlite|mongodb|redis|jdbc|odbc|executable|python|input|"
    r"deltalake|iceberg|hudi|fuzzjson|filesystem)\s*\(", re.IGNORECASE)


class QueryError(Exception):
    def __init__(self, message: str, kind: str = "bad_sql"):
        super().__init__(message)
        self.kind = kind


def _env(name: str, default: str | None = None) -> str | None:
    v = os.environ.get(name)
    return v if v not in (None, "") else default


def row_limit_default() -> int:
    return int(_env("TELBUS_QUERY_MAX_ROWS", str(DEFAULT_ROW_LIMIT)))


# ------------------------------------------------------------------------------------
# statement check
# ------------------------------------------------------------------------------------

def _strip_comments(sql: str) -> str:
    out, i, n = [], 0, len(sql)
    quote = None
    while i < n:
        ch = sql[i]
        if quote:
            out.append(ch)
            if ch == "\\" and i + 1 < n:
                out.append(sql[i + 1])
                i += 2
                continue
            if ch == quote:
                quote = None
            i += 1
            continue
        if ch in ("'", '"', "`"):
            quote = ch
            out.append(ch)
            i += 1
        elif sql.startswith("--", i) or ch == "#":
            j = sql.find("\n", i)
            i = n if j < 0 else j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            i = n if j < 0 else j + 2
            out.append(" ")
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _outside_quotes(sql: str) -> str:
    """The statement with string literals blanked (for keyword scans)."""
    return re.sub(r"'(?:\\.|[^'\\])*'", "''", sql)


def check_statement(sql: str) -> str:
    """The statement to run, or QueryError(kind='forbidden'|'bad_sql')."""
    if not sql or not sql.strip():
        raise QueryError("empty query", "bad_sql")
    text = _strip_comments(sql).strip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    bare = _outside_quotes(text)
    if ";" in bare:
        raise QueryError("only one statement per query", "forbidden")
    m = re.match(r"[\s(]*([A-Za-z]+)", bare)
    if not m:
        raise QueryError("not a SQL statement", "bad_sql")
    kw = m.group(1).upper()
    if kw not in ALLOWED and kw not in WRITES:
        raise QueryError(f"syntax error: {kw} is not a SQL statement", "bad_sql")
    if kw not in ALLOWED:
        raise QueryError(f"read-only endpoint: {kw} statements are not allowed "
                         f"(use {', '.join(sorted(ALLOWED))})", "forbidden")
    if re.search(r"\bINTO\s+OUTFILE\b", bare, re.IGNORECASE):
        raise QueryError("INTO OUTFILE is not allowed", "forbidden")
    fm = _OUTSIDE.search(bare)
    if fm:
        raise QueryError(f"table function {fm.group(1)}() is not allowed", "forbidden")
    return text


# ------------------------------------------------------------------------------------
# execution (shared by the endpoint and the direct path)
# ------------------------------------------------------------------------------------

def readonly_settings(limit: int) -> dict:
    # readonly last: once it is set the session cannot change settings any more
    return {"max_result_rows": limit + 1, "result_overflow_mode": "break",
            "max_execution_time": MAX_EXECUTION_S, "readonly": 1}


def readonly_client(dsn: str, limit: int | None = None):
    """A client whose session is read-only (and row/time capped) from its first query."""
    from sinks.store import connect, is_embedded

    limit = min(MAX_ROW_LIMIT, limit or row_limit_default())
    settings = readonly_settings(limit)
    if not is_embedded(dsn):
        # a server gets the settings with every request, next to the client's own: 2 keeps
        # writes and DDL refused while still letting those settings through (the
        # statement check refuses the table functions readonly=1 would also stop)
        settings["readonly"] = 2
    return connect(dsn, **settings)


def _jsonable(v):
    if isinstance(v, _dt.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(_dt.timezone.utc).replace(tzinfo=None)
        return v.isoformat(timespec="milliseconds") + "Z"
    if isinstance(v, _dt.date):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, (bytes, bytearray)):
        return v.decode("utf-8", "replace")
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return str(v)
    return v


def execute(client, sql: str, limit: int | None = None) -> dict:
    """Run one read-only statement; the result as a JSON-ready dict."""
    limit = row_limit_default() if limit is None else limit
    if limit < 1 or limit > MAX_ROW_LIMIT:
        raise QueryError(f"limit must be 1..{MAX_ROW_LIMIT}", "limit")
    stmt = check_statement(sql)
    t0 = time.perf_counter()
    try:
        res = client.query(stmt)
    except Exception as exc:
        raise QueryError(_clean_error(exc), "forbidden" if "READONLY" in str(exc) else "bad_sql") from None
    rows = res.result_rows
    columns = list(res.column_names)
    types = [t.name for t in res.column_types]
    if not rows and not columns and re.match(r"[\s(]*(SELECT|WITH)\b", stmt, re.IGNORECASE):
        # an empty result carries no header: ask for the shape of the query
        try:
            shape = client.query(f"DESCRIBE TABLE ({stmt})").result_rows
            columns = [r[0] for r in shape]
            types = [r[1] for r in shape]
        except Exception:
            pass
    truncated = len(rows) > limit
    rows = rows[:limit]
    return {
        "columns": columns,
        "types": types,
        "rows": [[_jsonable(v) for v in r] for r in rows],
        "row_count": len(rows),
        "truncated": truncated,
        "elapsed_s": round(time.perf_counter() - t0, 4),
    }


def _clean_error(exc: Exception) -> str:
    text = str(exc).strip()
    # drop clickhouse-connect's wrapping and the server's stack/version trailer
    for marker in ("DB::Exception: ",):
        if marker in text:
            text = text[text.rfind(marker) + len(marker):]
    text = re.sub(r"\s*\(version [^)]*\)\.?", "", text)
    return text.splitlines()[0].strip() if text else type(exc).__name__


# ------------------------------------------------------------------------------------
# HTTP endpoint
# ------------------------------------------------------------------------------------

def is_loopback(host: str) -> bool:
    from telbus.config import is_loopback as loopback

    return loopback(host)


class _Handler(BaseHTTPRequestHandler):
    server_version = "telbus-query"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet: the sink logs what matters
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", "Bearer")
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        token = self.server.token
        if not token:
            return True
        got = self.headers.get("Authorization", "")
        return got.startswith("Bearer ") and hmac.compare_digest(got[7:].strip().encode(), token.encode())

    def _handle(self, sql: str | None, limit) -> None:
        if not self._authorized():
            self._send(401, {"error": "missing or wrong bearer token", "kind": "unauthorized"})
            return
        try:
            lim = int(limit) if limit not in (None, "") else self.server.row_limit
            lim = min(lim, self.server.row_limit)
            with self.server.lock:
                body = execute(self.server.client, sql or "", lim)
            self.server.queries += 1
            self._send(200, body)
        except QueryError as exc:
            self._send(400, {"error": str(exc), "kind": exc.kind})
        except ValueError:
            self._send(400, {"error": "limit must be an integer", "kind": "limit"})
        except Exception as exc:  # never kill the sink for a query
            self._send(500, {"error": _clean_error(exc), "kind": "internal"})

    def do_GET(self):
        u = urllib.parse.urlparse(self.path)
        if u.path == "/health":
            self._send(200, {"ok": True, "pid": os.getpid()})
            return
        if u.path != "/query":
            self._send(404, {"error": "not found", "kind": "not_found"})
            return
        qs = urllib.parse.parse_qs(u.query)
        self._handle((qs.get("sql") or [None])[0], (qs.get("limit") or [None])[0])

    def do_POST(self):
        u = urllib.parse.urlparse(self.path)
        if u.path != "/query":
            self._send(404, {"error": "not found", "kind": "not_found"})
            return
        n = int(self.headers.get("Content-Length") or 0)
        if n > 1_000_000:
            self._send(413, {"error": "query too large", "kind": "bad_sql"})
            return
        raw = self.rfile.read(n).decode("utf-8", "replace")
        sql, limit = raw, None
        if "json" in (self.headers.get("Content-Type") or ""):
            try:
                doc = json.loads(raw or "{}")
                sql, limit = doc.get("sql"), doc.get("limit")
            except ValueError:
                self._send(400, {"error": "body is not JSON", "kind": "bad_sql"})
                return
        self._handle(sql, limit)


class QueryServer:
    """The sink's read-only SQL endpoint (a thread in the process that owns the store)."""

    def __init__(self, dsn: str, host: str | None = None, port: int | None = None,
                 token: str | None = None, row_limit: int | None = None, run_dir: Path | None = None):
        self.host = host or _env("TELBUS_QUERY_HOST") or _env("TELBUS_HTTP_HOST", "127.0.0.1")
        self.port = int(port if port is not None else _env("TELBUS_QUERY_PORT", "0"))
        self.token = token if token is not None else _env("TELBUS_QUERY_TOKEN")
        if not is_loopback(self.host) and not self.token:
            raise RuntimeError(f"query endpoint on non-loopback address {self.host} needs TELBUS_QUERY_TOKEN")
        self.row_limit = min(MAX_ROW_LIMIT, row_limit or row_limit_default())
        self.dsn = dsn
        self.run_dir = run_dir
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}"

    def start(self) -> str:
        httpd = ThreadingHTTPServer((self.host, self.port), _Handler)
        httpd.daemon_threads = True
        httpd.client = readonly_client(self.dsn, self.row_limit)
        httpd.lock = threading.Lock()
        httpd.token = self.token
        httpd.row_limit = self.row_limit
        httpd.queries = 0
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="telbus-query", daemon=True)
        self._thread.start()
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.run_dir / (URL_FILE + ".tmp")
            tmp.write_text(self.url + "\n")
            tmp.replace(self.run_dir / URL_FILE)
        return self.url

    def stop(self) -> None:
        if self._httpd is None:
            return
        if self.run_dir is not None:
            f = self.run_dir / URL_FILE
            try:
                if f.read_text().strip() == self.url:
                    f.unlink()
            except OSError:
                pass
        self._httpd.shutdown()
        self._httpd.server_close()
        try:
            self._httpd.client.close()
        except Exception:
            pass
        self._httpd = None


# ------------------------------------------------------------------------------------
# client side: run_query and output formats
# ------------------------------------------------------------------------------------

def _run_dir() -> Path:
    try:
        from telbus import config
        return config.data_dir() / "run"
    except Exception:  # pragma: no cover
        return Path(_env("TELBUS_DATA_DIR", str(Path(__file__).resolve().parents[1] / ".data"))) / "run"


def endpoint_url(run_dir: Path | None = None) -> str | None:
    f = (run_dir or _run_dir()) / URL_FILE
    try:
        return f.read_text().strip() or None
    except OSError:
        return None


def _post(url: str, sql: str, limit: int | None, timeout: float) -> dict:
    body = json.dumps({"sql": sql, "limit": limit}).encode()
    req = urllib.request.Request(url.rstrip("/") + "/query", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    token = _env("TELBUS_QUERY_TOKEN")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            doc = json.loads(exc.read())
        except ValueError:
            doc = {"error": f"HTTP {exc.code}", "kind": "internal"}
        raise QueryError(doc.get("error", f"HTTP {exc.code}"), doc.get("kind", "bad_sql")) from None


def query_result(sql: str, limit: int | None = None, dsn: str | None = None, run_dir: Path | None = None,
                 timeout: float = MAX_EXECUTION_S + 10) -> dict:
    """Result dict of a read-only query: via the running sink, or the store directly.

    Adds ``"via": "endpoint" | "direct"``.
    """
    from sinks.store import StoreBusy, default_dsn, is_embedded

    dsn = dsn or default_dsn()
    if is_embedded(dsn):
        check_statement(sql)     # same answer without a round trip
        url = endpoint_url(run_dir)
        if url:
            try:
                res = _post(url, sql, limit, timeout)
                res["via"] = "endpoint"
                return res
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass            # stale URL file (sink gone): open the store ourselves
    last: Exception | None = None
    for attempt in range(20):
        try:
            res = _direct(dsn, sql, limit)
            res["via"] = "direct"
            return res
        except StoreBusy as exc:
            # the sink is starting and owns the store: its endpoint appears shortly
            last = exc
            time.sleep(0.5)
            url = endpoint_url(run_dir)
            if url:
                try:
                    res = _post(url, sql, limit, timeout)
                    res["via"] = "endpoint"
                    return res
                except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                    pass
    raise QueryError(f"store busy and no query endpoint answers: {last}", "internal")


def _direct(dsn: str, sql: str, limit: int | None) -> dict:
    from sinks.store import Store

    # apply migrations with a writable client first (tables and views exist even before
    # the first sink run), then query through a read-only session
    st = Store(dsn)
    try:
        client = readonly_client(dsn, limit or row_limit_default())
        try:
            return execute(client, sql, limit)
        finally:
            client.close()
    finally:
        st.close()


def format_result(res: dict, fmt: str = "table") -> str:
    cols, rows = res["columns"], res["rows"]
    if fmt == "json":
        return json.dumps([dict(zip(cols, r)) for r in rows], ensure_ascii=False, indent=None) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        for r in rows:
            w.writerow([_cell(v) for v in r])
        return buf.getvalue()
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r} (table, json, csv)")
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max([len(c)] + [_width(r[i]) for r in cells]) for i, c in enumerate(cols)]
    numeric = [bool(rows) and all(isinstance(r[i], (int, float)) and not isinstance(r[i], bool)
                                  for r in rows if r[i] is not None) for i in range(len(cols))]

    def line(values):
        parts = []
        for i, v in enumerate(values):
            pad = widths[i] - _width(v)
            parts.append((" " * pad + v) if numeric[i] else (v + " " * pad))
        return "  ".join(parts).rstrip()

    out = [line(cols), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    footer = f"({res['row_count']} row{'s' if res['row_count'] != 1 else ''}"
    footer += ", truncated at the row limit)" if res.get("truncated") else ")"
    out.append(footer)
    return "\n".join(out) + "\n"


def _cell(v) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, (list, dict)):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _width(s: str) -> int:
    """Display width: CJK characters take two columns."""
    import unicodedata
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in s)


def run_query(sql: str, fmt: str = "table", limit: int | None = None, dsn: str | None = None) -> str:
    """``telbus query``: formatted result text (raises QueryError with a clear message)."""
    return format_result(query_result(sql, limit, dsn), fmt)
