import aiohttp
import pytest


@pytest.fixture
async def http():
    """The shared client session an adapter is given (short timeout: the fakes are local)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        yield session


@pytest.fixture
def closed_port():
    """A loopback port with nothing listening on it."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
