"""ChatSession: the live, stateful actor of one conversation.

It owns a FIFO of turns and one worker task that runs them one at a time, so concurrent sends
from several tabs never interleave. For each turn it calls the model while it stores the user
message and a pending reply, releases the turn's events once those are stored, streams the reply
to every socket of the session through the bus, and stores the reply as complete, cancelled or
failed.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from parley.bus.base import Bus, Guard
from parley.errors import BusUnavailable, Busy, Fenced, NotFound, ParleyError, ProviderError, TurnCancelled
from parley.language import reply_instruction
from parley.providers.llm import ChatDelta, ChatMessage, ChatProvider, ChatRequest, ToolCall, Usage
from parley.sessions import events
from parley.sessions.announce import ListAnnouncer
from parley.sessions.events import Event
from parley.sessions.keys import public_id
from parley.sessions.tools import MAX_TOOL_ROUNDS, Toolbox, use_tool
from parley.sessions.turn import Turn, TurnState
from parley.store.base import Message, MessageStatus, Store
from parley.text import valid_text

log = logging.getLogger("parley.turn")


def window_overflow(roles: Sequence[str], limit: int) -> int:
    """How many of the oldest earlier messages (`roles`, oldest first) leave the model's window now.

    Zero on most turns: the window grows by each exchange until it holds more than `limit`, then
    drops its oldest messages at once, keeping the newest half (ceil(limit / 2)), and grows again.
    So for about limit / 4 turns in a row (a turn adds two messages) each prompt is the previous
    prompt plus the new messages, and llama.cpp (or any server with a prompt cache) evaluates only
    the new part; a window sliding by one message a turn changes the prompt's beginning every
    turn, which is then evaluated whole. The kept part starts at a user message where one more
    message allows it (chat templates expect the user first).
    """
    if len(roles) <= limit:
        return 0
    keep = limit - limit // 2
    drop = len(roles) - keep
    if 0 < keep < limit and roles[drop] == "assistant":
        drop -= 1
    return drop


@dataclass(slots=True, frozen=True)
class SessionConfig:
    system_prompt: str
    history_limit: int
    max_tokens: int
    max_queued_turns: int
    #: how often at most the text of a running reply is stored (only when it grew), so a crash
    #: loses at most this much of what users saw
    partial_save_seconds: float = 1.0


class ChatSession:
    def __init__(
        self,
        key: str,
        *,
        store: Store,
        chat: ChatProvider,
        bus: Bus,
        config: SessionConfig,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_usage: Callable[[str, Usage], Awaitable[None]] | None = None,
        on_turn: Callable[[str, str], Awaitable[None]] | None = None,
        fence_of: Callable[[str], int | None] = lambda key: None,
        toolbox_of: Callable[[str], Toolbox | None] = lambda key: None,
        guard_of: Callable[[str], Guard | None] = lambda key: None,
    ) -> None:
        #: the session key (`<owner>/<id>`, sessions/keys.py): what the store and the bus know it by
        self.key = key
        #: the id its owner's clients use, which every event carries
        self.id = public_id(key)
        self._store = store
        self._chat = chat
        self._bus = bus
        self._config = config
        self._clock = clock
        self._sleep = sleep
        #: told the model usage of every turn that reports one (the owner's daily quota)
        self._on_usage = on_usage
        #: told (key, user text) after each stored turn, its reply already sent (the title)
        self._on_turn = on_turn
        self._queue: collections.deque[Turn] = collections.deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._current: Turn | None = None
        # The newest finished messages, enough for the model's context: no store read per turn.
        self._recent: collections.deque[Message] | None = None
        self._load_lock = asyncio.Lock()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self.last_active = clock()
        self._fence_of = fence_of
        #: tells the owner's list how this conversation stands (sessions/announce.py)
        self._announcer = ListAnnouncer(key, store=store, bus=bus)
        self._toolbox_of = toolbox_of
        self._guard_of = guard_of

    # -- public API ---------------------------------------------------------------------------

    @property
    def fence(self) -> int | None:
        """The fencing token of this node's lease on the session now (several nodes:
        sessions/cluster.py; None: one process). Every write carries it, and the store refuses it
        once another node took the session."""
        return self._fence_of(self.key)

    @property
    def toolbox(self) -> Toolbox | None:
        """The tools this session's turns offer the model now (a connected device's: the registry
        lends them, `SessionRegistry.lend_tools`), or None."""
        return self._toolbox_of(self.key)

    @property
    def busy(self) -> bool:
        return self._current is not None or bool(self._queue)

    def submit(
        self,
        text: str,
        *,
        source: str = "http",
        language: str | None = None,
        client_id: str | None = None,
        replace_from: int | None = None,
        turn_id: str | None = None,
        relay: AsyncIterator[ChatDelta] | None = None,
    ) -> Turn:
        """Queue a turn and return at once; await `turn.done` for the stored reply.

        `replace_from`: the id of an earlier user message this turn edits (or re-asks, to
        regenerate its reply); it and every later message become `replaced` when the turn is stored.
        `relay`: the reply's text comes from it, not from the session's model (a voice bridge).
        """
        if self._closed:
            raise ParleyError("session is closing")
        if len(self._queue) >= self._config.max_queued_turns:
            raise Busy(
                f"too many turns waiting in this session (limit {self._config.max_queued_turns})",
                field="sessionId",
                limit=self._config.max_queued_turns,
            )
        # Text from any source (a transcript too) must be storable and sendable: see parley.text.
        turn = Turn(
            text=valid_text(text),
            source=source,
            language=language,
            client_id=client_id,
            replace_from=replace_from,
            relay=relay,
        )
        if turn_id is not None:
            turn.id = turn_id  # chosen by the node that handed the turn over (sessions/cluster.py)
        self._queue.append(turn)
        self.last_active = self._clock()
        self._idle.clear()
        self._wakeup.set()
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name=f"session:{self.key}")
        return turn

    def stop(self, turn_id: str | None = None) -> Turn | None:
        """Stop the running turn (or the named running or queued turn); returns it, or None."""
        turn = self._current
        if turn_id is not None and (turn is None or turn.id != turn_id):
            turn = next((t for t in self._queue if t.id == turn_id), None)
            if turn is None:
                raise NotFound(f"no running or queued turn {turn_id!r} in this session", field="turnId")
        if turn is None or turn.done.done():
            return None  # a turn that has ended (its reply stored) is past stopping
        turn.stop_requested = True
        if turn.stream_task is not None:
            turn.stream_task.cancel()
        return turn

    async def interrupt(self, turn: Turn, heard: str) -> None:
        """A barge-in: keep only `heard` (what was played) as the reply, marked interrupted.

        Works whether the model is still writing (the turn is stopped) or already done (the
        stored reply is cut back to what the user heard).
        """
        if not turn.state.finished:
            turn.heard = heard
            self.stop(turn.id)
            return
        if turn.reply is None or turn.reply.status is not MessageStatus.COMPLETE:
            return
        msg = await self._store.finish_message(
            turn.reply.id, heard, MessageStatus.INTERRUPTED, fence=self.fence
        )
        turn.reply = msg
        if self._recent is not None:
            for i, recent in enumerate(self._recent):
                if recent.id == msg.id:
                    self._recent[i] = msg
        await self.publish(events.interrupted(self.id, msg))

    async def idle(self) -> None:
        """Returns once no turn runs or waits."""
        await self._idle.wait()

    def catch_up_mark(self) -> str | None:
        """The bus id a socket joining now resumes after to see the running reply from its start
        (None: no reply is running, or its events are not published yet)."""
        turn = self._current
        return (turn.mark or None) if turn is not None and turn.message_id is not None else None

    def catch_up(self) -> list[Event]:
        """What a socket joining mid-reply needs to show the reply so far (then live chunks follow),
        where the bus no longer keeps the running reply's events."""
        turn = self._current
        if turn is None or turn.message_id is None:
            return []
        caught = [events.turn_started(self.id, turn.id, turn.message_id)]
        if turn.parts:
            caught.append(events.chunk(self.id, turn.id, turn.message_id, "".join(turn.parts)))
        return caught

    async def history(self, limit: int | None = None) -> list[Message]:
        return await self._store.list_messages(self.key, limit=limit)

    async def clear(self) -> int:
        """Drop queued turns, stop the running one, then delete the history."""
        dropped, self._queue = self._queue, collections.deque()
        for turn in dropped:
            turn.finish(TurnState.CANCELLED, TurnCancelled("the conversation was cleared"))
        self.stop()
        await self._idle.wait()
        removed = await self._store.clear_session(self.key, fence=self.fence)
        if self._recent is not None:
            self._recent.clear()
        await self.publish(events.cleared(self.id))
        # awaited: a delete clears first, and its `deleted` must be the last word
        await self._announcer.now()
        return removed

    async def publish(self, event: Event) -> str:
        """Send an event to every socket of the session; returns its bus id ("" if the bus is down).

        A bus that does not answer (Redis gone) must not end the turn: it is still stored, and its
        own request still hears it; sockets that missed events reload the history when they
        reconnect (their resume finds a gap).
        """
        self.last_active = self._clock()
        try:
            # guarded by this node's lease on the session (several nodes): once another node has
            # taken it over, this one's events are refused (Fenced) as its writes are
            return await self._bus.publish(self.key, event.data, guard=self._guard_of(self.key))
        except BusUnavailable as exc:
            log.warning("session=%s: event %s not sent: %s", self.id, event.type, exc.message)
            return ""

    def close(self) -> None:
        """Refuse new turns from now on.

        Not async, so the registry can judge a session idle, drop it and close it in one step of
        the event loop: no request can slip a turn into a session that is about to go.
        """
        self._closed = True

    async def aclose(self) -> None:
        """Cancel the worker; a turn in flight is recorded as cancelled, queued turns are told."""
        self.close()
        # Taken out first, so the worker cannot start one of them while it is being cancelled.
        waiting, self._queue = self._queue, collections.deque()
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        await self._announcer.aclose()
        self._idle.set()  # a clear() waiting for the worker must not wait for ever
        # Every waiter hears first; then the sockets, so a failing bus cannot leave a turn open.
        told = [
            self._end_unstored(turn, TurnCancelled("the server stopped before this turn ran"))
            for turn in waiting
        ]
        for event in told:
            await self.publish(event)

    # -- the worker ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._closed:
            if not self._queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            turn = self._queue.popleft()
            self._current = turn
            try:
                await self._run_turn(turn)
            except asyncio.CancelledError:
                # _run_turn ends its turn when cancelled, but a second cancel can cut that short:
                # whoever awaits the turn must still hear, or an HTTP request hangs for ever.
                if not turn.done.done():
                    self._end_unstored(turn, TurnCancelled("the server stopped while this turn ran"))
                raise
            except Fenced as exc:  # another node took the session over: its writes are its own now
                log.warning("turn=%s session=%s: %s", turn.id, self.id, exc.message)
                if not turn.done.done():
                    # the request that sent it hears how it ended; the new owner told the sockets
                    turn.notify(events.turn_dropped(self.id, turn.id, exc.to_dict(), turn.client_id))
                    turn.finish(TurnState.FAILED, exc)
            except Exception:  # a bug must not kill the session's worker
                log.exception("turn crashed session=%s turn=%s", self.id, turn.id)
                if not turn.done.done():
                    turn.finish(TurnState.FAILED, ParleyError("internal error"))
            finally:
                self._current = None
                self.last_active = self._clock()

    def forget_context(self) -> None:
        """Read the context from storage again before the next turn: another node may have
        written turns of this session while this one did not run it (sessions/cluster.py)."""
        self._recent = None

    def starts_empty(self) -> None:
        """The caller knows storage holds nothing of this session yet (it just checked): its first
        turn needs no history read before the model call."""
        if self._recent is None:
            self._recent = collections.deque()

    async def _context(self) -> collections.deque[Message]:
        if self._recent is None:
            async with self._load_lock:
                if self._recent is None:
                    limit = self._config.history_limit
                    loaded = await self._store.list_messages(self.key, limit=limit) if limit else []
                    # No maxlen: the window advances in blocks (`window_overflow`), not a message at a time.
                    self._recent = collections.deque(loaded)
        return self._recent

    def _model_messages(
        self, recent: collections.deque[Message], text: str, language: str | None
    ) -> list[ChatMessage]:
        """The model's input: system prompt, at most `history_limit` earlier messages, `text`."""
        system = self._config.system_prompt
        if language:
            system = f"{system}\n\n{reply_instruction(language)}"
        messages = [ChatMessage("system", system)]
        for _ in range(window_overflow([m.role for m in recent], self._config.history_limit)):
            recent.popleft()
        for msg in recent:
            if msg.role == "assistant" and not msg.content:
                continue  # a reply that failed before any text: nothing for the model to see
            messages.append(ChatMessage(msg.role, msg.content))
        messages.append(ChatMessage("user", text))
        return messages

    async def _run_turn(self, turn: Turn) -> None:
        """One turn. The model call leaves at once, beside the turn's writes (the user message and
        the pending reply, one transaction); the turn's events wait for those writes, as the seed's
        Durable Object's output gate holds messages until what precedes them is durable. So a
        client never sees what storage could lose, and the model's first token does not wait for
        the disk. A failed write cancels the model call and fails the turn.
        """
        pending: Message | None = None
        writes: asyncio.Task[tuple[Message, Message]] | None = None
        try:
            recent = await self._context()
            if turn.replace_from is not None:
                # the model sees the conversation as it was before the edited message
                while recent and recent[-1].id >= turn.replace_from:
                    recent.pop()
            started = time.perf_counter()
            request = ChatRequest(
                self._model_messages(recent, turn.text, turn.language), max_tokens=self._config.max_tokens
            )
            usage: list[Usage] = []
            reasons: list[str] = []  # why the model stopped, once it says ("length": max_tokens)
            released = asyncio.Event()  # the output gate: set once the writes have committed
            writes = asyncio.create_task(
                self._store.begin_turn(
                    self.key, turn.id, turn.text, replace_from=turn.replace_from, fence=self.fence
                ),
                name=f"turn-write:{turn.id}",
            )
            if not turn.stop_requested:
                turn.stream_task = asyncio.create_task(
                    self._pump(turn, request, usage, reasons, released), name=f"turn:{turn.id}"
                )
            try:
                # wait(), not await: the writes' own failure is read below, not raised here.
                await asyncio.wait([writes])
                user, pending = writes.result()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._write_failed(turn, exc)
                return
            first = not recent and turn.replace_from is None
            recent.append(user)
            turn.state = TurnState.RUNNING
            turn.message_id = pending.id
            if turn.replace_from is not None:
                await self._emit(turn, events.replaced(self.id, turn.id, turn.replace_from))
            turn.mark = await self._emit(turn, events.user_message(self.id, user, turn.client_id))
            await self._emit(turn, events.turn_started(self.id, turn.id, pending.id))
            released.set()
            if first:  # maybe this turn made the conversation: the owner's other tabs list it now
                self._announcer.soon(made_at=user.created_at)

            if turn.stream_task is not None:
                await self._stream(turn, pending)
            error: BaseException | None = None
            if turn.stream_task is None or turn.stream_task.cancelled():
                error = TurnCancelled("the turn was stopped")
            else:
                error = turn.stream_task.exception()
            reply = await self._finish(
                turn, pending, usage[-1] if usage else None, error, reasons[-1] if reasons else None
            )
        except asyncio.CancelledError:
            # Cancelled (shutdown) at any await of the turn: the turn still ends, and says so.
            if turn.stream_task is not None:
                turn.stream_task.cancel()
                await asyncio.gather(turn.stream_task, return_exceptions=True)
            if pending is None and writes is not None:
                if writes.done() and not writes.cancelled() and writes.exception() is None:
                    pending = writes.result()[1]  # stored just before the cancel landed
                else:
                    writes.cancel()
            if not turn.done.done():
                stopped = TurnCancelled("the server stopped while this turn ran")
                if pending is None:
                    await self.publish(self._end_unstored(turn, stopped))
                else:
                    await self._finish(turn, pending, None, stopped)
            raise
        recent.append(reply)
        self._log_turn(turn, started, usage, reply, error)
        if usage and self._on_usage is not None:
            try:
                await self._on_usage(self.key, usage[-1])
            except Exception:
                log.exception("could not count the usage of turn=%s session=%s", turn.id, self.key)
        if self._on_turn is not None:
            try:
                await self._on_turn(self.key, turn.text)
            except Exception:
                log.exception("after-turn hook failed turn=%s session=%s", turn.id, self.key)
        self._announcer.soon()

    async def _write_failed(self, turn: Turn, exc: Exception) -> None:
        """The turn's writes failed: end the model call and the turn; no event of it was sent."""
        log.error("could not store turn=%s session=%s: %r", turn.id, self.id, exc)
        if turn.replace_from is not None:
            self._recent = None  # what an edit took out of the context is read again from storage
        if turn.stream_task is not None:
            turn.stream_task.cancel()
            await asyncio.gather(turn.stream_task, return_exceptions=True)
        error = ParleyError("the message could not be stored; nothing was kept, send it again")
        event = events.turn_dropped(self.id, turn.id, error.to_dict(), turn.client_id)
        turn.notify(event)
        turn.finish(TurnState.FAILED, error)
        await self.publish(event)

    async def _stream(self, turn: Turn, pending: Message) -> None:
        """Wait for the model's reply (`_pump`), storing the text so far as it grows."""
        assert turn.stream_task is not None
        saver = asyncio.create_task(self._save_partials(turn, pending.id), name=f"turn-save:{turn.id}")
        try:
            # wait(), not await: a stopped stream must not look like this task being cancelled.
            await asyncio.wait([turn.stream_task])
        finally:
            saver.cancel()
            await asyncio.gather(saver, return_exceptions=True)

    async def _save_partials(self, turn: Turn, message_id: int) -> None:
        """Store the reply so far while it is written, so a kill -9 keeps what users saw.

        Wakes only when the text grew, and writes at most once per `partial_save_seconds` on the
        session's clock: one small UPDATE a second per running reply however fast the model
        writes, and the final write (`_finish`) still says how the reply ended.
        """
        interval = self._config.partial_save_seconds
        saved = 0  # parts already stored: parts only grow while the model writes
        last = self._clock()
        while True:
            await turn.grew.wait()
            if (delay := last + interval - self._clock()) > 0:
                await self._sleep(delay)
            turn.grew.clear()
            count = len(turn.parts)
            if count == saved:
                continue
            try:
                await self._store.save_partial(message_id, "".join(turn.parts[:count]), fence=self.fence)
            except Exception:  # a failing store must not end the reply; its final write will tell
                log.warning(
                    "could not store a partial reply session=%s turn=%s", self.id, turn.id, exc_info=True
                )
                return
            saved = count
            last = self._clock()

    def _end_unstored(self, turn: Turn, error: TurnCancelled) -> Event:
        """End a turn with no stored reply (it never ran, or stopped before one was made).

        Its own feed and `done` hear at once; the returned event is for the session's sockets.
        """
        event = events.turn_dropped(self.id, turn.id, error.to_dict(), turn.client_id)
        turn.notify(event)
        turn.finish(TurnState.CANCELLED, error)
        return event

    async def _pump(
        self,
        turn: Turn,
        request: ChatRequest,
        usage: list[Usage],
        reasons: list[str],
        released: asyncio.Event,
    ) -> None:
        """Stream the model's reply into `turn.parts` and `chunk` events, once `released`.

        Runs from before the turn's writes commit: a delta that comes sooner waits at the gate
        (and the upstream with it, for the moment the commit takes). When the session has a
        toolbox and the model calls its tools, each call is made (sessions/tools.py) and the model
        goes on with their results: one reply, several model calls.
        """
        toolbox = self.toolbox if self._chat.supports_tools and turn.relay is None else None
        offered = list(toolbox.tools()) if toolbox is not None else []
        messages = list(request.messages)
        spent: list[Usage] = []
        for round_ in range(MAX_TOOL_ROUNDS + 1):
            # the last round offers no tools: the model must answer in words
            tools = offered if round_ < MAX_TOOL_ROUNDS else []
            start = len(turn.parts)
            calls = await self._stream_once(
                turn, replace(request, messages=messages, tools=tools), spent, reasons, released
            )
            if not calls or toolbox is None:
                break
            await released.wait()
            assert turn.message_id is not None
            messages.append(ChatMessage("assistant", "".join(turn.parts[start:]), tool_calls=calls))
            for call in calls:
                result = await use_tool(toolbox, call)
                await self._emit(
                    turn,
                    events.tool_call(
                        self.id,
                        turn.id,
                        turn.message_id,
                        call.name,
                        call.arguments,
                        result.text,
                        result.is_error,
                    ),
                )
                messages.append(ChatMessage("tool", result.text, tool_call_id=call.id, name=call.name))
        if len(spent) > 1:  # the turn's usage is every model call's
            usage.append(
                Usage(
                    sum(u.prompt_tokens for u in spent),
                    sum(u.completion_tokens for u in spent),
                    sum(u.total_tokens for u in spent),
                )
            )
        else:
            usage.extend(spent)

    async def _stream_once(
        self,
        turn: Turn,
        request: ChatRequest,
        usage: list[Usage],
        reasons: list[str],
        released: asyncio.Event,
    ) -> tuple[ToolCall, ...]:
        """One model call of the reply; returns the tools it called (none: the reply is written)."""
        calls: tuple[ToolCall, ...] = ()
        # a relayed reply (a voice bridge's) is written elsewhere: no model call, no tools
        stream = turn.relay if turn.relay is not None else self._chat.stream(request)
        try:
            async for delta in stream:
                if delta.text and turn.first_token_at is None:
                    turn.first_token_at = time.perf_counter()  # the model's time, not the gate's
                if not released.is_set():
                    await released.wait()
                assert turn.message_id is not None
                if delta.text:
                    # A model may write an unpaired surrogate (a JSON escape, a token cut
                    # mid-pair); the stored reply and every event must still encode.
                    text = valid_text(delta.text)
                    turn.parts.append(text)
                    turn.grew.set()
                    await self._emit(turn, events.chunk(self.id, turn.id, turn.message_id, text))
                if delta.usage is not None:
                    usage.append(delta.usage)
                if delta.finish_reason is not None:
                    reasons.append(delta.finish_reason)
                calls += delta.tool_calls
        finally:
            # Close the provider's generator now, not at garbage collection: a stop that lands
            # between two deltas must end the upstream call (or the local model's thread) at once.
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        return calls

    async def _finish(
        self,
        turn: Turn,
        pending: Message,
        usage: Usage | None,
        error: BaseException | None,
        finish_reason: str | None = None,
    ) -> Message:
        turn.usage = usage
        text = "".join(turn.parts)
        result: Message | BaseException
        if error is None:
            msg = await self._store.finish_message(
                pending.id, text, MessageStatus.COMPLETE, finish_reason=finish_reason, fence=self.fence
            )
            event, state, result = events.reply(self.id, msg, usage), TurnState.COMPLETE, msg
        elif isinstance(error, TurnCancelled) and turn.heard is not None:
            msg = await self._store.finish_message(
                pending.id, turn.heard, MessageStatus.INTERRUPTED, fence=self.fence
            )
            event, state, result = events.interrupted(self.id, msg), TurnState.CANCELLED, error
        elif isinstance(error, TurnCancelled):
            msg = await self._store.finish_message(
                pending.id, text, MessageStatus.CANCELLED, fence=self.fence
            )
            event, state, result = events.cancelled(self.id, msg), TurnState.CANCELLED, error
        else:
            if not isinstance(error, ParleyError):
                log.error("unexpected model error session=%s turn=%s: %r", self.id, turn.id, error)
            perr = error if isinstance(error, ParleyError) else ProviderError(f"model call failed: {error}")
            msg = await self._store.finish_message(
                pending.id, text, MessageStatus.FAILED, valid_text(perr.message), fence=self.fence
            )
            event, state, result = events.turn_failed(self.id, msg, perr.to_dict()), TurnState.FAILED, perr
        turn.reply = msg
        # Ended before the broadcast's await: a cancel landing there cannot leave the turn
        # open (or store it a second time, as cancelled).
        turn.notify(event)
        turn.finish(state, result)
        await self.publish(event)
        return msg

    async def _emit(self, turn: Turn, event: Event) -> str:
        turn.notify(event)
        return await self.publish(event)

    def _log_turn(
        self,
        turn: Turn,
        started: float,
        usage: list[Usage],
        reply: Message,
        error: BaseException | None,
    ) -> None:
        now = time.perf_counter()
        ttft = f"{(turn.first_token_at - started) * 1000:.1f}" if turn.first_token_at else "-"
        log.info(
            "turn session=%s turn=%s source=%s provider=%s model=%s outcome=%s queue_ms=%.1f "
            "ttft_ms=%s total_ms=%.1f reply_chars=%d completion_tokens=%s%s",
            self.id,
            turn.id,
            turn.source,
            self._chat.name,
            self._chat.model or "-",
            reply.status.value,
            (started - turn.queued_at) * 1000,
            ttft,
            (now - started) * 1000,
            len(reply.content),
            usage[-1].completion_tokens if usage else "-",
            f" error={type(error).__name__}" if error and not isinstance(error, TurnCancelled) else "",
        )
