import threading

import pytest

from packforcing.controls import LiveControls


def test_prompt_is_taken_once_and_camera_is_held():
    c = LiveControls()
    assert c.poll() == (None, None)
    c.switch_prompt("a green square")
    c.steer("left")
    assert c.poll() == ("a green square", "left")
    assert c.poll() == (None, "left")  # the prompt applies once; the camera stays
    c.switch_prompt("a")
    c.switch_prompt("b")  # the later one replaces a queued one
    assert c.poll() == ("b", "left")


def test_bad_values_name_what_is_allowed():
    c = LiveControls()
    with pytest.raises(ValueError, match="'up' is not allowed; choose one of left, still, right"):
        c.steer("up")
    with pytest.raises(ValueError, match="empty"):
        c.switch_prompt("   ")
    with pytest.raises(ValueError, match="'down'"):
        LiveControls(camera="down")


def test_writes_from_other_threads_are_seen():
    c = LiveControls(camera="still")
    threads = [threading.Thread(target=c.steer, args=("right",)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c.poll() == (None, "right")
