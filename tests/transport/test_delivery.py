"""Delivery settling: once settled, a delivery lets go of what it refers to."""

from __future__ import annotations

import gc
import weakref

import numpy as np

from fl_broker.transport.base import Delivery


def _delivery_with_a_settler_that_refers_back(body: np.ndarray, calls: list[str]) -> Delivery:
    delivery = Delivery(body=memoryview(body), exchange="fl.result", routing_key="server")
    # Like the transports' settlers: a closure over the delivery itself (a reference cycle until settled).
    delivery.settler = lambda action, reason: calls.append(f"{action} {delivery.routing_key} {reason}")
    return delivery


def test_a_settled_delivery_frees_its_body_without_the_cyclic_collector():
    calls: list[str] = []
    body = np.ones(1000, dtype=np.float32)
    alive = weakref.ref(body)
    delivery = _delivery_with_a_settler_that_refers_back(body, calls)
    del body
    gc.disable()  # a model-sized body must not wait for the collector: refcounting alone must free it
    try:
        delivery.ack()
        del delivery
        assert alive() is None
    finally:
        gc.enable()
    assert calls == ["ack server None"]


def test_settling_twice_or_after_withdraw_does_nothing():
    calls: list[str] = []
    first = _delivery_with_a_settler_that_refers_back(np.zeros(4), calls)
    first.reject("bad")
    first.ack()
    second = _delivery_with_a_settler_that_refers_back(np.zeros(4), calls)
    assert second.withdraw()
    second.reject("late")
    assert calls == ["reject server bad"]
    assert first.settled and second.settled
