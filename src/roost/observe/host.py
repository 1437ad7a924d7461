"""The device itself: CPU, memory, disk, network, temperature and clock, "where readable".

Everything is read through psutil at scrape time; what a machine does not offer (no temperature
sensors in a VM, no ``getloadavg``) is detected once and left out, never guessed. Bounded: at most
:data:`MAX_INTERFACES` network interfaces and :data:`MAX_SENSORS` temperature sensors.

Metric names (all gauges unless ``_total``):

``roost_host_cpu_usage_ratio``, ``roost_host_cpu_seconds_total{mode}``, ``roost_host_cpu_count``,
``roost_host_load1``, ``roost_host_memory_total_bytes``, ``roost_host_memory_available_bytes``,
``roost_host_memory_usage_ratio``, ``roost_host_disk_total_bytes{path}``, ``roost_host_disk_free_bytes{path}``,
``roost_host_disk_usage_ratio{path}``, ``roost_host_network_received_bytes_total{interface}``,
``roost_host_network_transmitted_bytes_total{interface}``, ``roost_host_temperature_celsius{sensor}``,
``roost_host_time_seconds`` (the device's clock: compare with ``time()`` for skew),
``roost_host_boot_time_seconds``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import psutil
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

logger = logging.getLogger(__name__)

MAX_INTERFACES: Final = 32
MAX_SENSORS: Final = 32


@dataclass(frozen=True)
class HostSample:
    """The few host values the hub keeps per device (the heartbeat snapshot, the console charts)."""

    cpu_ratio: float
    memory_ratio: float
    disk_ratio: float | None
    temperature_celsius: float | None


class CpuMeter:
    """CPU busy share between two reads (each consumer has its own: a scrape does not reset a snapshot's)."""

    def __init__(self) -> None:
        self._last = psutil.cpu_times()

    def read(self) -> float:
        now = psutil.cpu_times()
        last, self._last = self._last, now
        idle = (now.idle + getattr(now, "iowait", 0.0)) - (last.idle + getattr(last, "iowait", 0.0))
        total = sum(now) - sum(last)
        return min(1.0, max(0.0, 1.0 - idle / total)) if total > 0 else 0.0


class HostReader:
    """Reads the host through psutil; remembers what this machine cannot tell."""

    def __init__(self, disk_path: Path) -> None:
        self.disk_path = disk_path
        self._temperatures = hasattr(psutil, "sensors_temperatures")
        self._load = hasattr(os, "getloadavg")
        self._scrape_cpu = CpuMeter()
        self._sample_cpu = CpuMeter()

    def memory(self) -> tuple[int, int]:
        vm = psutil.virtual_memory()
        return int(vm.total), int(vm.available)

    def disk(self) -> tuple[int, int] | None:
        try:
            usage = psutil.disk_usage(str(self.disk_path))
        except OSError:
            return None
        return int(usage.total), int(usage.free)

    def temperatures(self) -> dict[str, float]:
        if not self._temperatures:
            return {}
        try:
            found = psutil.sensors_temperatures()
        except (OSError, RuntimeError) as err:
            logger.info("temperature sensors are not readable here (%s): not exported", err)
            self._temperatures = False
            return {}
        out: dict[str, float] = {}
        for chip, entries in sorted(found.items()):
            for i, entry in enumerate(entries):
                if len(out) >= MAX_SENSORS:
                    return out
                name = f"{chip}/{entry.label or i}"
                out[name] = float(entry.current)
        if not out:
            self._temperatures = False  # none on this machine (a VM): do not ask again
        return out

    def sample(self) -> HostSample:
        total, available = self.memory()
        disk = self.disk()
        temps = self.temperatures()
        return HostSample(cpu_ratio=self._sample_cpu.read(), memory_ratio=_ratio(total - available, total),
                          disk_ratio=None if disk is None else _ratio(disk[0] - disk[1], disk[0]),
                          temperature_celsius=max(temps.values()) if temps else None)

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("roost_host_cpu_usage_ratio", "CPU busy share since the previous scrape (0..1)",
                                value=self._scrape_cpu.read())
        times = psutil.cpu_times()
        cpu = CounterMetricFamily("roost_host_cpu_seconds", "CPU time spent per mode, all CPUs", labels=["mode"])
        for mode in ("user", "system", "idle", "iowait", "irq", "softirq", "steal", "nice"):
            value = getattr(times, mode, None)
            if value is not None:
                cpu.add_metric([mode], float(value))
        yield cpu
        yield GaugeMetricFamily("roost_host_cpu_count", "Logical CPUs", value=float(psutil.cpu_count() or 1))
        if self._load:
            try:
                yield GaugeMetricFamily("roost_host_load1", "1-minute load average", value=os.getloadavg()[0])
            except OSError:
                self._load = False
        total, available = self.memory()
        yield GaugeMetricFamily("roost_host_memory_total_bytes", "Physical memory", value=float(total))
        yield GaugeMetricFamily("roost_host_memory_available_bytes", "Memory available without swapping",
                                value=float(available))
        yield GaugeMetricFamily("roost_host_memory_usage_ratio", "Memory in use (0..1)",
                                value=_ratio(total - available, total))
        disk = self.disk()
        if disk is not None:
            path = [str(self.disk_path)]
            for name, doc, value in (("total_bytes", "Size of the agent root's file system", disk[0]),
                                     ("free_bytes", "Free space on the agent root's file system", disk[1])):
                family = GaugeMetricFamily(f"roost_host_disk_{name}", doc, labels=["path"])
                family.add_metric(path, float(value))
                yield family
            ratio = GaugeMetricFamily("roost_host_disk_usage_ratio", "Share of the agent root's file system in use",
                                      labels=["path"])
            ratio.add_metric(path, _ratio(disk[0] - disk[1], disk[0]))
            yield ratio
        yield from self._network()
        temps = self.temperatures()
        if temps:
            family = GaugeMetricFamily("roost_host_temperature_celsius", "Temperature sensors", labels=["sensor"])
            for name, value in temps.items():
                family.add_metric([name], value)
            yield family
        yield GaugeMetricFamily("roost_host_time_seconds", "The device's clock (Unix time)", value=time.time())
        yield GaugeMetricFamily("roost_host_boot_time_seconds", "When the device booted (Unix time)",
                                value=float(psutil.boot_time()))

    def _network(self) -> Iterator[Metric]:
        try:
            counters = psutil.net_io_counters(pernic=True)
        except OSError:
            return
        rx = CounterMetricFamily("roost_host_network_received_bytes", "Bytes received per interface",
                                 labels=["interface"])
        tx = CounterMetricFamily("roost_host_network_transmitted_bytes", "Bytes sent per interface",
                                 labels=["interface"])
        for name in sorted(counters)[:MAX_INTERFACES]:
            rx.add_metric([name], float(counters[name].bytes_recv))
            tx.add_metric([name], float(counters[name].bytes_sent))
        yield rx
        yield tx


def _ratio(part: float, whole: float) -> float:
    return float(part) / float(whole) if whole > 0 else 0.0


__all__ = ["MAX_INTERFACES", "MAX_SENSORS", "CpuMeter", "HostReader", "HostSample"]
