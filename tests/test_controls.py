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


def test_a_change_waits_for_the_lock_and_is_then_seen():
    """Every change and read takes the lock: while another thread holds it, a steer and a
    switch from other threads wait, and both are seen once it is released. (Without the
    lock they would land at once, while the holder still reads.)"""
    lock = threading.Lock()
    c = LiveControls(camera="still", lock=lock)
    with lock:
        writers = [threading.Thread(target=c.steer, args=("right",)),
                   threading.Thread(target=c.switch_prompt, args=("a green square",))]
        for t in writers:
            t.start()
        for t in writers:
            t.join(timeout=0.2)
        assert all(t.is_alive() for t in writers), "a change went through while the lock was held"
    for t in writers:
        t.join()
    assert c.poll() == ("a green square", "right")
