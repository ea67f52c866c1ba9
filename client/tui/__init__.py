"""`hushwire chat`: the full-screen terminal chat (prompt_toolkit; the only UI code).

    model.py       ChatModel: pure state (conversations, unread, presence); no I/O
    commands.py    parse_input(): a typed line -> Command, message text or CommandError
    controller.py  ChatController: commands and client events against client + model
    view.py        rendering and the message pane
    app.py         ChatApp: the prompt_toolkit Application around it all; main()

Every piece of text a peer or the relay controls passes through `safe_for_terminal`
before it reaches the screen.
"""

from hushwire.client.tui.app import UNDO_CHARS, ChatApp, main
from hushwire.client.tui.commands import (
    COMMANDS,
    ChatCompleter,
    Command,
    CommandError,
    parse_input,
)
from hushwire.client.tui.controller import ChatController, error_text
from hushwire.client.tui.model import (
    HISTORY_ON_OPEN,
    MAX_HISTORY,
    MAX_LINES,
    ChatModel,
    Conversation,
    Line,
)
from hushwire.client.tui.view import MessagePane, render

__all__ = [
    "COMMANDS",
    "HISTORY_ON_OPEN",
    "MAX_HISTORY",
    "MAX_LINES",
    "UNDO_CHARS",
    "ChatApp",
    "ChatCompleter",
    "ChatController",
    "ChatModel",
    "Command",
    "CommandError",
    "Conversation",
    "Line",
    "MessagePane",
    "error_text",
    "main",
    "parse_input",
    "render",
]
