# A worker that defines its own class and sends instances of it (and the class itself) to the host.
from arkworker import worker_port


class Reading:
    def __init__(self, sensor, values):
        self.sensor = sensor
        self.values = values

    def mean(self):
        return sum(self.values) / len(self.values)

    class Unit:  # a nested class: pickle names it Reading.Unit
        def __init__(self, symbol):
            self.symbol = symbol


def on_message(e):
    if e.data == "make":
        return Reading("t1", [1.0, 2.0, 3.0])
    if e.data == "unit":
        return Reading.Unit("°C")
    if e.data == "pair":
        return (Reading, Reading("t2", [4.0]))
    if e.data == "post":
        worker_port.post_message(Reading("t3", [5.0, 7.0]))
        return None
    kind, value = e.data
    if kind == "is-reading":
        return isinstance(value, Reading) and value.mean()
    raise ValueError(f"unexpected message {e.data!r}")


worker_port.onmessage = on_message
