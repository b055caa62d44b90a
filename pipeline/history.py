"""The conversation as the caller experienced it."""

from __future__ import annotations

from pipeline.providers.base import Message


class History:
    """System prompt plus turns, trimmed to a bound so long calls stay small."""

    def __init__(self, system_prompt: str, max_messages: int = 40) -> None:
        self._system: Message = {"role": "system", "content": system_prompt}
        self._turns: list[Message] = []
        self._max = max_messages

    def messages(self, pending_user: str | None = None) -> list[Message]:
        out = [self._system, *self._turns]
        if pending_user:
            out.append({"role": "user", "content": pending_user})
        return out

    def add(self, role: str, content: str) -> Message:
        message: Message = {"role": role, "content": content}
        self._turns.append(message)
        if len(self._turns) > self._max:
            del self._turns[: len(self._turns) - self._max]
        return message

    def revise(self, message: Message, content: str) -> None:
        """Replace an assistant message with what was really heard (empty removes it)."""
        if content:
            message["content"] = content
            return
        for index, existing in enumerate(self._turns):
            if existing is message:
                del self._turns[index]
                return

    @property
    def turns(self) -> list[Message]:
        return list(self._turns)
