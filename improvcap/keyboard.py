"""Keys of the session dashboard: a terminal key reader and the bindings it drives.

Space or Enter starts/stops a take, `s` slates, `m` marks the moment (then type an optional note for it
and Enter; Esc keeps the mark without a note: one mark either way, at the moment `m` was pressed), `c`
circles the last take (the one recording, else the one before), `n` moves to the next scene, `q` quits
(asking first while recording).
"""

from __future__ import annotations

import os
import select
import termios
import threading
import tty
from collections.abc import Callable
from pathlib import Path

from .clock import now_ns
from .errors import ImprovcapError
from .recorder import RunState
from .session import TakeControl

HELP = "space/enter start·stop   s slate   m mark(+note)   c circle   n next scene   q quit"


class KeyBindings:
    """Turns key presses into TakeControl commands; `prompt` and `message` are for the dashboard."""

    def __init__(self, control: TakeControl) -> None:
        self.control = control
        self.prompt = ""  # what the keys are being typed into, shown under the table
        self.message = ""  # the outcome of the last command
        self._note: str | None = None  # the note being typed for a mark
        self._mark_ns = 0  # when `m` was pressed: the mark's time
        self._confirm_quit = False

    def press(self, key: str) -> None:
        try:
            self._press(key)
        except ImprovcapError as e:
            self.message = f"error: {e}"

    def _press(self, key: str) -> None:
        if self._note is not None:
            self._note_key(key)
            return
        if self._confirm_quit:
            self._confirm_quit = False
            self.prompt = ""
            if key.lower() == "y":
                self.control.stop()
                self.control.quit.set()
            else:
                self.message = "still recording"
            return
        if key in (" ", "\r", "\n"):
            result = self.control.toggle()
            self.message = (
                f"recording {result['take']}"
                if "first_record_ms" in result
                else f"stopped {result['take']} ({result['duration_s']:.1f} s)"
            )
        elif key == "s":
            self.control.slate()
            self.message = "slate"
        elif key == "m":
            self._mark_ns = now_ns()
            self._note = ""
            self.prompt = "note for the mark (Enter to save, Esc to skip): "
        elif key == "c":
            self.message = f"circled {Path(self.control.annotate('circle', '')['take']).name}"
        elif key == "n":
            self.message = f"next scene: {self.control.next_scene()['scene']}"
        elif key == "q":
            if self.control.recorder.state is RunState.RECORDING:
                self._confirm_quit = True
                self.prompt = "a take is recording: stop it and quit? [y/N] "
            else:
                self.control.quit.set()

    def _note_key(self, key: str) -> None:
        assert self._note is not None
        if key in ("\r", "\n", "\x1b"):
            note = self._note.strip() if key != "\x1b" else ""
            self._note, self.prompt = None, ""
            self.control.annotate("mark", note, self._mark_ns)
            self.message = f"mark{': ' + note if note else ''}"
        elif key in ("\x7f", "\b"):
            self._note = self._note[:-1]
        elif key.isprintable():
            self._note += key

    @property
    def line(self) -> str:
        return self.prompt + (self._note or "") if self.prompt else self.message


class KeyReader:
    """Reads single key presses from a terminal in cbreak mode on a thread; restores the terminal."""

    def __init__(self, fd: int, on_key: Callable[[str], None]) -> None:
        self._fd = fd
        self._on_key = on_key
        self._stop = threading.Event()
        self._saved = termios.tcgetattr(fd)
        self._thread = threading.Thread(target=self._run, name="improvcap-keys", daemon=True)

    def __enter__(self) -> KeyReader:
        tty.setcbreak(self._fd)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._fd], [], [], 0.1)
            if ready:
                data = os.read(self._fd, 32)
                if not data:
                    return
                for key in data.decode("utf-8", "ignore"):
                    self._on_key(key)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2.0)
        termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
