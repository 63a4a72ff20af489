"""Load profiles (``configs/profiles/NAME.toml``) and stability targets (``configs/targets.toml``).

An SRE changes numbers in these files, not code. Unknown keys are errors that name the key,
so a typo does not silently fall back to a default.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROFILES_DIR = ROOT / "configs" / "profiles"
TARGETS_PATH = ROOT / "configs" / "targets.toml"
NETWORK_PATH = ROOT / "configs" / "load-network.toml"


class ProfileError(ValueError):
    pass


def _take(table: dict[str, Any], where: str, allowed: dict[str, Any]) -> dict[str, Any]:
    unknown = set(table) - set(allowed)
    if unknown:
        raise ProfileError(f"{where}: unknown keys {sorted(unknown)}")
    return {key: table.get(key, default) for key, default in allowed.items()}


def _range(value: Any, where: str) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return float(value), float(value)
    if isinstance(value, list) and len(value) == 2 and value[0] <= value[1]:
        return float(value[0]), float(value[1])
    raise ProfileError(f"{where}: expected a number or [min, max]")


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    description: str = ""
    status: str = "ready"  # "stub": not runnable yet, the runner prints ``skip_reason`` and exits 4
    skip_reason: str = ""
    run_time_s: float = 60.0
    rooms: int = 1
    room_prefix: str = "lt"
    freeze_rooms: tuple[int, ...] = ()
    freeze_every_s: float = 0.0
    freeze_for_s: float = 0.0
    freeze_first_s: float = 2.0
    freeze_count: int = 0  # 0: pause until the run ends
    viewers: int = 20
    spawn_rate: float = 10.0
    start_after_s: float = 3.0
    watch_s: tuple[float, float] = (0.0, 0.0)  # 0: until the end of the run
    rejoin: float = 0.0
    pause_s: tuple[float, float] = (1.0, 3.0)
    join_timeout_s: float = 10.0
    retry_after_failure_s: float = 2.0
    network: dict[str, float] = field(default_factory=lambda: {"same-city": 1.0})
    chat_users: int = 0
    chat_per_s: float = 0.0
    gifts_per_s: float = 0.0
    likes_per_s: float = 0.0
    processes: int = 1
    viewers_per_process: int = 200
    targets: dict[str, Any] = field(default_factory=dict)
    video_slots: int = 1  # video m-lines per viewer: 2 to also receive a PK partner
    pk: bool = False  # pair rooms (0-1, 2-3, ...) and battle repeatedly
    pk_battle_s: float = 20.0
    pk_gap_s: float = 3.0

    @property
    def pk_settings(self) -> dict[str, float] | None:
        return {"battle_s": self.pk_battle_s, "gap_s": self.pk_gap_s} if self.pk else None

    @property
    def pk_span_s(self) -> float:
        """A viewer session at least this long overlaps a battle (when battles run back to back)."""
        return self.pk_battle_s + self.pk_gap_s + 5.0 if self.pk else 0.0

    @property
    def room_names(self) -> list[str]:
        return [f"{self.room_prefix}-{i}" for i in range(self.rooms)]

    @property
    def users(self) -> int:
        """Locust users: one host per room, the chat users, the viewers."""
        return self.rooms + self.chat_users + self.viewers

    @property
    def freeze(self) -> dict[str, float] | None:
        if self.freeze_every_s <= 0 or self.freeze_for_s <= 0:
            return None
        return {"every_s": self.freeze_every_s, "for_s": self.freeze_for_s, "first_s": self.freeze_first_s,
                "count": self.freeze_count}


def profile_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.is_file():
        return path
    return PROFILES_DIR / f"{name_or_path}.toml"


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))


def load_profile(name_or_path: str) -> Profile:
    path = profile_path(name_or_path)
    if not path.exists():
        raise ProfileError(f"no profile {name_or_path!r}; available: {', '.join(available_profiles())}")
    data = tomllib.loads(path.read_text())
    where = str(path)
    top = _take(
        data,
        where,
        {"description": "", "status": "ready", "skip_reason": "", "run_time_s": 60.0, "rooms": {}, "hosts": {},
         "viewers": {}, "chat": {}, "generator": {}, "targets": {}, "pk": {}},
    )
    rooms = _take(top["rooms"], f"{where} [rooms]", {"count": 1, "prefix": "lt"})
    hosts = _take(top["hosts"], f"{where} [hosts]",
                  {"freeze_rooms": [], "freeze_every_s": 0.0, "freeze_for_s": 0.0, "freeze_first_s": 2.0,
                   "freeze_count": 0})
    viewers = _take(
        top["viewers"],
        f"{where} [viewers]",
        {"count": 20, "spawn_rate": 10.0, "start_after_s": 3.0, "watch_s": 0.0, "rejoin": 0.0, "pause_s": [1.0, 3.0],
         "join_timeout_s": 10.0, "retry_after_failure_s": 2.0, "network": {"same-city": 1.0}, "slots": 1},
    )
    chat = _take(top["chat"], f"{where} [chat]",
                 {"users": 0, "chat_per_s": 0.0, "gifts_per_s": 0.0, "likes_per_s": 0.0})
    generator = _take(top["generator"], f"{where} [generator]", {"processes": 1, "viewers_per_process": 200})
    pk = _take(top["pk"], f"{where} [pk]", {"enabled": False, "battle_s": 20.0, "gap_s": 3.0})
    if top["status"] not in ("ready", "stub"):
        raise ProfileError(f"{where}: status must be 'ready' or 'stub'")
    network = {str(k): float(v) for k, v in viewers["network"].items()}
    if not network or any(v < 0 for v in network.values()) or sum(network.values()) <= 0:
        raise ProfileError(f"{where} [viewers.network]: need positive weights")
    if not 0 <= float(viewers["rejoin"]) <= 1:
        raise ProfileError(f"{where} [viewers] rejoin: a probability, 0..1")
    return Profile(
        name=path.stem,
        description=str(top["description"]),
        status=str(top["status"]),
        skip_reason=str(top["skip_reason"]),
        run_time_s=float(top["run_time_s"]),
        rooms=int(rooms["count"]),
        room_prefix=str(rooms["prefix"]),
        freeze_rooms=tuple(int(r) for r in hosts["freeze_rooms"]),
        freeze_every_s=float(hosts["freeze_every_s"]),
        freeze_for_s=float(hosts["freeze_for_s"]),
        freeze_first_s=float(hosts["freeze_first_s"]),
        freeze_count=int(hosts["freeze_count"]),
        viewers=int(viewers["count"]),
        spawn_rate=float(viewers["spawn_rate"]),
        start_after_s=float(viewers["start_after_s"]),
        watch_s=_range(viewers["watch_s"], f"{where} [viewers] watch_s"),
        rejoin=float(viewers["rejoin"]),
        pause_s=_range(viewers["pause_s"], f"{where} [viewers] pause_s"),
        join_timeout_s=float(viewers["join_timeout_s"]),
        retry_after_failure_s=float(viewers["retry_after_failure_s"]),
        network=network,
        chat_users=int(chat["users"]),
        chat_per_s=float(chat["chat_per_s"]),
        gifts_per_s=float(chat["gifts_per_s"]),
        likes_per_s=float(chat["likes_per_s"]),
        processes=int(generator["processes"]),
        viewers_per_process=int(generator["viewers_per_process"]),
        targets=dict(top["targets"]),
        video_slots=int(viewers["slots"]),
        pk=bool(pk["enabled"]),
        pk_battle_s=float(pk["battle_s"]),
        pk_gap_s=float(pk["gap_s"]),
    )


TARGET_KEYS: dict[str, dict[str, float]] = {
    "viewers": {
        "stutter_ratio_max": 0.005,
        "join_success_min": 0.999,
        "ttff_p95_ms_max": 2000.0,
        "latency_p95_ms_max": 400.0,
        "whep_error_rate_max": 0.001,
        "lost_session_rate_max": 0.001,
    },
    "events": {"chat_echo_p95_ms_max": 500.0, "event_error_rate_max": 0.01},
    "hosts": {"publish_success_min": 1.0},
    "pk": {"pk_setup_p95_ms_max": 3000.0, "partner_video_min": 0.999, "rooms_without_battle_max": 0.0},
    "generator": {"cpu_mean_max": 0.85, "cpu_busy_share_max": 0.2, "loop_lag_p99_ms_max": 50.0,
                  "locust_lag_p99_ms_max": 1000.0},
}


@dataclass(frozen=True, slots=True)
class Targets:
    viewers: dict[str, float]
    events: dict[str, float]
    hosts: dict[str, float]
    pk: dict[str, float]
    generator: dict[str, float]
    by_network: dict[str, dict[str, float]]  # condition -> viewer target overrides

    def section(self, name: str) -> dict[str, float]:
        value: dict[str, float] = getattr(self, name)
        return value


def _section(data: dict[str, Any], name: str, where: str) -> dict[str, float]:
    table = data.get(name, {})
    allowed = TARGET_KEYS[name]
    unknown = set(table) - set(allowed)
    if unknown:
        raise ProfileError(f"{where} [{name}]: unknown targets {sorted(unknown)}")
    return {key: float(table.get(key, default)) for key, default in allowed.items()}


def load_targets(path: Path = TARGETS_PATH, overrides: dict[str, Any] | None = None) -> Targets:
    """The targets file, with a profile's ``[targets]`` tables laid over it."""
    data = tomllib.loads(path.read_text())
    unknown = set(data) - set(TARGET_KEYS) - {"by_network"}
    if unknown:
        raise ProfileError(f"{path}: unknown sections {sorted(unknown)}")
    for section, table in (overrides or {}).items():
        if section not in TARGET_KEYS and section != "by_network":
            raise ProfileError(f"profile [targets]: unknown section {section!r}")
        if section == "by_network":
            merged = data.setdefault("by_network", {})
            for net, values in table.items():
                merged.setdefault(net, {}).update(values)
        else:
            data.setdefault(section, {}).update(table)
    by_network: dict[str, dict[str, float]] = {}
    for net, table in data.get("by_network", {}).items():
        unknown = set(table) - set(TARGET_KEYS["viewers"])
        if unknown:
            raise ProfileError(f"{path} [by_network.{net}]: unknown targets {sorted(unknown)}")
        by_network[net] = {k: float(v) for k, v in table.items()}
    return Targets(
        _section(data, "viewers", str(path)),
        _section(data, "events", str(path)),
        _section(data, "hosts", str(path)),
        _section(data, "pk", str(path)),
        _section(data, "generator", str(path)),
        by_network,
    )
