"""A Modbus TCP link (a gateway module, a PLC, a node on Ethernet) behind the bus interface.

The same coordinator contract as an RS-485 bus (:class:`~gateway.bus.ModbusBus`): one
transaction at a time, replies checked, errors translated; the device ``address`` of the config
is the Modbus unit id. No silent interval (TCP frames are delimited by the MBAP header).
"""

from __future__ import annotations

from pymodbus import FramerType
from pymodbus.client import AsyncModbusTcpClient

from gateway.bus import ModbusBus

__all__ = ["TcpBus"]


class TcpBus(ModbusBus):
    def __init__(self, host: str, port: int = 502, timeout: float = 0.5, retries: int = 0):
        super().__init__(timeout)
        self.host = host
        self.port = port
        # reconnect_delay=0: the poller owns reconnecting (see gateway/bus.py, PortLost)
        self._client = AsyncModbusTcpClient(host, port=port, framer=FramerType.SOCKET,
                                            timeout=timeout, retries=retries,
                                            reconnect_delay=0)

    def describe(self) -> str:
        return f"Modbus TCP {self.host}:{self.port}"
