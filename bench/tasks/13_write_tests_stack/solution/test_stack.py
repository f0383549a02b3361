import pytest

from stack import Stack


def test_push_pop_is_lifo():
    s = Stack()
    s.push(1)
    s.push(2)
    assert s.pop() == 2
    assert s.pop() == 1


def test_peek_does_not_remove():
    s = Stack()
    s.push("a")
    assert s.peek() == "a"
    assert len(s) == 1


def test_len_and_empty():
    s = Stack()
    assert len(s) == 0 and s.is_empty()
    s.push(1)
    assert len(s) == 1 and not s.is_empty()


def test_empty_raises():
    with pytest.raises(IndexError):
        Stack().pop()
    with pytest.raises(IndexError):
        Stack().peek()
