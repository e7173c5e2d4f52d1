"""The Textual app of ``warmctl top`` (loaded by ``ctl.top`` once Textual is known to import).

Everything it shows comes from the watch stream: a ``Snapshot`` fills the tables, each
later event updates the one row it is about. Nothing asks the daemon for its status or
its jobs; the only timer redraws the elapsed time of running jobs from the local clock.
When the connection ends (``Disconnected``) a banner says so until a ``Snapshot`` comes
again: from the client, where it connects again by itself (``reconnecting``), else from a
new client the app makes, with backoff, until a daemon answers on the socket (those
never start one).
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Input, RichLog, Static

from ..aio import AsyncClient, AsyncJob
from ..client.watch import Disconnected, JobChanged, Snapshot
from ..errors import DaemonUnavailable, WarmdError
from ..client.connect import socket_path
from . import exitcodes
from .top import JOB_COLUMNS, WORKER_COLUMNS, OutputLines, Row, TopModel, elapsed_text

STYLES = {"": "", "stderr": "red", "log": "dim", "warning": "yellow", "note": "italic cyan"}
MAX_LINES = 5000


def _texts(cells: Row) -> list[Text]:
    """Cells as Rich text: a string cell would be read as markup (a bar's "[##...]", or a
    job's name with brackets in it, would vanish)."""
    return [Text(cell) for cell in cells]


class JobsTable(DataTable):
    """The jobs: enter follows the selected one (and the footer says so)."""
    BINDINGS = [Binding("enter", "select_cursor", "follow")]


class OutputPane(RichLog):
    """The followed job's output and log lines; ``plain`` keeps them as text."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_lines=MAX_LINES, markup=False, highlight=False, wrap=True, **kwargs)
        self.plain: list[str] = []

    def add_line(self, text: str, style: str = "") -> None:
        self.plain.append(text)
        del self.plain[:-MAX_LINES]
        if style in ("", "stderr"):  # the job's own bytes: its colours, never markup
            self.write(Text.from_ansi(text, style=STYLES[style]))
        else:
            self.write(Text(text, style=STYLES.get(style, "")))

    def add_lines(self, lines: list[tuple[str, str]]) -> None:
        for text, style in lines:
            self.add_line(text, style)

    def clear(self) -> "OutputPane":
        self.plain.clear()
        return super().clear()


Connect = Callable[[str, bool], AsyncClient]


def new_client(socket: str, autostart: bool) -> AsyncClient:
    return AsyncClient(socket, autostart=autostart, name="warmctl top")


class TopApp(App[int]):
    """``warmctl top``. ``backoff``: the first and the longest wait between the app's own
    reconnects; ``connect(socket, autostart)``: a new, unconnected client."""

    TITLE = "warmctl top"
    CSS = """
    #summary { height: 1; padding: 0 1; background: $panel; color: $text; text-style: bold; }
    #banner { height: 1; padding: 0 1; background: $error; color: $text; display: none; }
    #workers { height: auto; max-height: 9; }
    #jobs { height: 1fr; border-top: solid $primary; }
    #filter { display: none; }
    #output { height: 1fr; border-top: solid $primary; }
    """
    BINDINGS = [
        Binding("enter", "follow", "follow", show=False),
        Binding("c", "request('cancel', 'interrupt')", "cancel"),
        Binding("k", "request('cancel', 'kill')", "kill"),
        Binding("r", "request('restart')", "restart"),
        Binding("slash", "filter", "filter", key_display="/"),
        Binding("escape", "close_filter", "clear filter", show=False),
        Binding("q", "quit", "quit"),
    ]

    def __init__(self, socket: str | None = None, autostart: bool = True, *,
                 backoff: tuple[float, float] = (0.2, 5.0), connect: Connect | None = None) -> None:
        super().__init__()
        self.connect = connect or new_client
        self.socket = str(socket_path(socket))
        self.autostart = autostart
        self.backoff = backoff
        self.model = TopModel()
        self.client: AsyncClient | None = None    # while connected
        self.ever_connected = False
        self.away = False                         # the banner is up: no snapshot since
        self.reconnects = 0                       # connections made after a lost one
        self.failure: BaseException | None = None  # why the first connection failed
        self.following: str | None = None
        self._refollow: str | None = None         # followed when the connection was lost
        self._detaching: set[asyncio.Future] = set()
        self._clock: Any = None                   # ticks only while a job runs

    def compose(self) -> ComposeResult:
        yield Static(Text(f"connecting to {self.socket}"), id="summary", markup=False)
        yield Static("", id="banner", markup=False)
        yield DataTable(id="workers", cursor_type="none", show_cursor=False)
        yield JobsTable(id="jobs", cursor_type="row")
        yield Input(placeholder="filter jobs by name: part of it, or a shell pattern", id="filter")
        yield OutputPane(id="output")
        yield Footer()

    def on_mount(self) -> None:
        for table, columns in ((self.workers_table, WORKER_COLUMNS), (self.jobs_table, JOB_COLUMNS)):
            for key, heading, width in columns:
                table.add_column(heading, key=key, width=width)
        self.workers_table.can_focus = False
        self.jobs_table.focus()
        self.pane.add_line("select a job and press enter to follow its output", "note")
        self.run_worker(self._watch(), name="watch", group="watch")  # a bug in it ends the app

    @property
    def workers_table(self) -> DataTable:
        return self.query_one("#workers", DataTable)

    @property
    def jobs_table(self) -> DataTable:
        return self.query_one("#jobs", DataTable)

    @property
    def pane(self) -> OutputPane:
        return self.query_one("#output", OutputPane)

    @property
    def banner(self) -> Static:
        return self.query_one("#banner", Static)

    # ---------------------------------------------------------------- the watch

    async def _watch(self) -> None:
        delay = self.backoff[0]
        attempt = 0
        while True:
            client = self.connect(self.socket, self.autostart and not self.ever_connected)
            reason: BaseException | None = None
            try:
                await client.connect()
                async for event in client.watch():
                    if not self.is_running:  # shutting down: its tables may be gone already
                        break
                    if isinstance(event, Disconnected):
                        reason = event.error
                        if event.reconnecting:  # the client connects again by itself
                            self._lost(reason, "reconnecting")
                            continue
                        break
                    if isinstance(event, Snapshot) and (self.client is not client or self.away):
                        self._connected(client)
                        delay, attempt = self.backoff[0], 0
                    self._apply(event)
            except (WarmdError, OSError) as exc:
                reason = exc
            finally:
                if self.client is client:
                    self.client = None
                await client.close()
            if not self.ever_connected:  # as any other verb: say why, and exit
                self.failure = reason or DaemonUnavailable(f"no daemon answers on {self.socket}")
                self.exit(return_code=exitcodes.UNAVAILABLE)
                return
            attempt += 1
            self._lost(reason, f"reconnecting (attempt {attempt}, in {delay:.1f}s)")
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff[1])

    @property
    def connected(self) -> bool:
        """Whether the tables are live: a snapshot came since the connection was last lost."""
        return self.client is not None and not self.away

    def _connected(self, client: AsyncClient) -> None:
        if self.ever_connected:
            self.reconnects += 1
        self.client = client
        self.ever_connected = True
        self.away = False
        self._show_banner(None)

    def _lost(self, reason: BaseException | None, what: str) -> None:
        self.away = True
        why = f" ({reason})" if reason else ""
        self._show_banner(f"connection to the daemon lost{why}: {what}")

    def _show_banner(self, text: str | None) -> None:
        self.banner.update(Text(text or ""))
        self.banner.display = text is not None

    def _apply(self, event: Any) -> None:
        what = self.model.apply(event)
        self._clock_while_running()
        if what == "all":
            self._fill(self.workers_table, self.model.worker_rows())
            self._refresh_jobs()
            if self._refollow is not None and self._refollow in self.model.jobs:
                self.follow(self._refollow)
            self._refollow = None
        elif what == "job":
            self._update_job(event.job.id, isinstance(event, JobChanged) and event.change == "dropped")
        elif what == "worker":
            key, cells = str(event.worker.pid), self.model.worker_cells(event.worker.pid)
            self._place(self.workers_table, WORKER_COLUMNS, key, cells,
                        lambda: [k for k, _ in self.model.worker_rows()])
        if what in ("all", "status"):
            self._show_summary()

    def _show_summary(self) -> None:
        self.query_one("#summary", Static).update(Text(self.model.header(self.socket)))

    # ---------------------------------------------------------------- tables

    def _refresh_jobs(self) -> None:
        self._fill(self.jobs_table, self.model.job_rows())

    def _update_job(self, job_id: str, dropped: bool) -> None:
        if dropped and any(job_id in (j.group, j.parent) for j in self.model.jobs.values()):
            self._refresh_jobs()  # the jobs below it move up a level
            return
        self._place(self.jobs_table, JOB_COLUMNS, job_id, self.model.job_cells(job_id),
                    lambda: [k for k, _ in self.model.job_rows()])

    @staticmethod
    def _cursor_key(table: DataTable) -> str | None:
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    @staticmethod
    def _restore_cursor(table: DataTable, key: str | None) -> None:
        if key is not None and key in table.rows:
            table.move_cursor(row=table.get_row_index(key), scroll=False)

    def _fill(self, table: DataTable, rows: list[tuple[str, Row]]) -> None:
        keep = self._cursor_key(table)
        table.clear()
        for key, cells in rows:
            table.add_row(*_texts(cells), key=key)
        self._restore_cursor(table, keep)

    def _place(self, table: DataTable, columns: tuple, key: str, cells: Row | None,
               order: Callable[[], list[str]]) -> None:
        """Update the row ``key``, add it where ``order`` puts it, or remove it (None)."""
        if cells is None:
            if key in table.rows:
                table.remove_row(key)
            return
        if key in table.rows:
            for (column, _, _), value in zip(columns, cells):
                if str(table.get_cell(key, column)) != value:
                    table.update_cell(key, column, Text(value))
            return
        keep = self._cursor_key(table)
        table.add_row(*_texts(cells), key=key)
        keys = order()
        if keys and keys[-1] != key:  # not the last: below its parent, or by slot
            where = {k: i for i, k in enumerate(keys)}
            table.sort(columns[0][0], key=lambda text: where.get(str(text), len(where)))
            self._restore_cursor(table, keep)

    def _clock_while_running(self) -> None:
        """The elapsed column's clock runs while a job does, and not at all when idle."""
        running = any(job.state == "running" for job in self.model.jobs.values())
        if running and self._clock is None:
            self._clock = self.set_interval(1.0, self._tick)  # the local clock: nobody is asked
        elif not running and self._clock is not None:
            self._clock.stop()
            self._clock = None

    def _tick(self) -> None:
        now, table = time.time(), self.jobs_table
        for job in self.model.jobs.values():
            if job.state == "running" and job.started and job.id in table.rows:
                table.update_cell(job.id, "elapsed", Text(elapsed_text(job, now)))

    # ---------------------------------------------------------------- following a job

    def selected_job(self) -> str | None:
        return self._cursor_key(self.jobs_table)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "jobs" and event.row_key.value is not None:
            self.follow(event.row_key.value)

    def action_follow(self) -> None:
        job_id = self.selected_job()
        if job_id is not None:
            self.follow(job_id)

    def follow(self, job_id: str) -> None:
        """Show ``job_id``'s output from its start, live; the job followed before is detached
        (cancelling its worker in the "follow" group detaches it)."""
        if self.client is None:
            self.notify("not connected to the daemon", severity="warning")
            return
        self.following = job_id
        job = self.model.jobs.get(job_id)
        self.pane.clear()
        self.pane.add_line(f"[job {job_id} {job.name if job else ''}]", "note")
        self.run_worker(self._follow_reporting(self.client, job_id), group="follow", exclusive=True,
                        exit_on_error=False)

    async def _follow_reporting(self, client: AsyncClient, job_id: str) -> None:
        try:
            await self._follow(client, job_id)
        except Exception as exc:  # a bug here must show, not end the app
            self.pane.add_line(f"warmctl top: following {job_id} failed: {type(exc).__name__}: {exc}",
                               "warning")

    async def _follow(self, client: AsyncClient, job_id: str) -> None:
        attaching = asyncio.ensure_future(client.attach(job_id))
        try:
            job = await asyncio.shield(attaching)
        except asyncio.CancelledError:  # replaced before the daemon answered: detach once it has
            attaching.add_done_callback(
                lambda t: None if t.cancelled() or t.exception() else self._detach(client, t.result()))
            raise
        except WarmdError as exc:
            self.pane.add_line(f"cannot follow job {job_id}: {exc}", "warning")
            return
        lines = OutputLines()
        try:
            async for event in job.events():
                self.pane.add_lines(lines.feed(event))
        finally:
            if not job.done():  # replaced by another job, or the app is quitting
                self._detach(client, job)
        self.pane.add_lines(lines.finish(job.finished))
        if job.finished is None:
            self._refollow = job_id

    def _detach(self, client: AsyncClient, job: AsyncJob) -> None:
        # A connection follows a job once, however many AsyncJobs it has of it: when the job
        # is followed again (enter twice), a detach sent after the new attach would stop both.
        if client is self.client and job.id != self.following:
            task = asyncio.ensure_future(client.detach(job.id))
            self._detaching.add(task)
            task.add_done_callback(lambda t: (self._detaching.discard(t),
                                              t.cancelled() or t.exception()))

    # ---------------------------------------------------------------- cancel, kill, restart

    def action_request(self, what: str, mode: str = "") -> None:
        """c, k and r: cancel (interrupt), kill or restart the selected job."""
        job_id, client = self.selected_job(), self.client
        if job_id is None:
            return
        if client is None:
            self.notify("not connected to the daemon", severity="warning")
            return
        self.run_worker(self._send(client, what, job_id, mode), group="requests", exit_on_error=False)

    async def _send(self, client: AsyncClient, what: str, job_id: str, mode: str) -> None:
        try:
            if what == "restart":
                self.notify(f"job {job_id} restarted as {await client.restart(job_id)}")
            else:
                outcome = await client.cancel(job_id, mode)
                self.notify(f"job {job_id} ({mode}): {outcome.replace('_', ' ')}")
        except Exception as exc:  # refused (WarmdError), or a bug: say so either way
            self.notify(f"job {job_id}: {exc}", severity="error")

    # ---------------------------------------------------------------- the filter

    @property
    def filter_input(self) -> Input:
        return self.query_one("#filter", Input)

    def action_filter(self) -> None:
        self.filter_input.display = True
        self.filter_input.focus()

    def action_close_filter(self) -> None:
        if self.filter_input.display:
            self.filter_input.value = ""
            self.filter_input.display = False
            self.jobs_table.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if self.model.pattern != event.value.strip():
            self.model.pattern = event.value.strip()
            self._refresh_jobs()
            self._show_summary()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.filter_input.display = False  # the filter stays: / shows it again
        self.jobs_table.focus()
