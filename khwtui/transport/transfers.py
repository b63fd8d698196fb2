"""How a release transfer reads to a person: one line with bytes, rate and ETA, and which progress
events are worth a line (the start, every quarter, the end) so logs and `--auto` stay short."""

from __future__ import annotations

from dataclasses import dataclass, field

from khwtui.core.events import TransferProgress

VERBS = {"node": "download", "push": "upload"}


def size(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def describe(e: TransferProgress) -> str:
    """"download etcd-v3.4.23-linux-amd64.tar.gz 25% (5.2 of 20.8 MB, 4.1 MB/s, ETA 4 s)"."""
    verb = VERBS.get(e.mode, e.mode)
    if not e.total:
        return f"{verb} {e.file} {size(e.done)} ({size(e.rate)}/s)"
    percent = min(100, e.done * 100 // e.total)
    eta = f", ETA {e.eta:.0f} s" if e.eta is not None and e.done < e.total else ""
    return f"{verb} {e.file} {percent}% ({size(e.done)} of {size(e.total)}, {size(e.rate)}/s{eta})"


def short(e: TransferProgress) -> str:
    """For a node's row: "etcd-v3.4.23-linux-amd64.tar.gz 25% 4.1 MB/s ETA 4 s"."""
    if not e.total:
        return f"{e.file} {size(e.done)}"
    eta = f" ETA {e.eta:.0f} s" if e.eta is not None and e.done < e.total else ""
    return f"{e.file} {min(100, e.done * 100 // e.total)}% {size(e.rate)}/s{eta}"


@dataclass
class Milestones:
    """Says which progress events mark a new quarter of their transfer (0 %, 25 %, 50 %, 75 %, 100 %)."""

    seen: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def reached(self, e: TransferProgress) -> bool:
        key = (e.node, e.file, e.mode)
        quarter = 4 if e.total and e.done >= e.total else (e.done * 4 // e.total if e.total else 0)
        if key in self.seen and quarter <= self.seen[key]:
            return False
        self.seen[key] = quarter
        return True
