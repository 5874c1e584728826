import signal
import sys
from types import FrameType

# A Ctrl-C while the modules load would interrupt pydantic's schema build, which reports it as a SchemaError (exit
# code 1). So, when Ctrl-C has its default meaning, it is noted while importing and honoured right after: exit 130.
_interrupted: list[int] = []


def _note(signum: int, frame: FrameType | None) -> None:
    _interrupted.append(signum)


_deferred = signal.getsignal(signal.SIGINT) is signal.default_int_handler
if _deferred:
    signal.signal(signal.SIGINT, _note)
try:
    from .cli import main
finally:
    if _deferred:
        signal.signal(signal.SIGINT, signal.default_int_handler)
if _interrupted:
    sys.exit(130)

sys.exit(main())
